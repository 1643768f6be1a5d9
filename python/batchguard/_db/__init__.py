"""The database layer under every SQL store: the SQLite and PostgreSQL dead-letter queues and
job stores open, lock, transact, reconnect and report errors through :mod:`.sqlite` and
:mod:`.postgres`; :mod:`.role` says what a database is used as (its name in messages and the
errors it raises). This module imports none of them."""
