"""The pure-Python reference engine (``engine="python"``).

It implements the whole contract of DESIGN.md in plain Python. It is the benchmark baseline
and the oracle of the differential tests: the Rust engine mirrors it part for part and decision
for decision, so for the same input and failure plan both engines reach the same outcomes.
Each module here has a Rust twin, to be read side by side:

=================  =========================  ==============================================
module             Rust twin                  what it holds
=================  =========================  ==============================================
``scheduler``      ``src/engine/mod.rs``      the Scheduler: its parts and the run's state
``work``           ``src/engine/mod.rs``      Work (one attempt), Wait, FEED, DONE
``fresh``          ``src/engine/fresh.rs``    the input read so far, the unstarted records
``keys``           ``src/engine/keys.rs``     keyed ordering (``key_of``)
``retries``        ``src/engine/retries.rs``  the retry queue and its timers
``batches``        ``src/engine/batches.rs``  the open batches, their accounting and events
``gates``          ``src/engine/gates.rs``    breaker, rate limit, batch delay, error budget
``breaker``        ``src/breaker.rs``         the circuit-breaker state machine
``ratelimit``      ``src/ratelimit.rs``       the token bucket
``drivers``        ``src/bindings/``          the inline and threaded drivers
``bulk``           ``src/bindings/bulk.rs``   a bulk fn's groups on those drivers, bisected
=================  =========================  ==============================================
"""

from .breaker import Breaker
from .drivers import _Classify as _Classify
from .drivers import feed, run_reference
from .scheduler import Scheduler
from .work import DONE, FEED, Wait, Work

__all__ = ["DONE", "FEED", "Breaker", "Scheduler", "Wait", "Work", "feed", "run_reference"]
