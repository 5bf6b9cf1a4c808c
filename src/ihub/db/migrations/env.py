from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from ihub.db.registry import metadata

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        # ihub.db.migrate sets it from the hub's database URL; a bare `alembic` run has none.
        raise RuntimeError("sqlalchemy.url is not set: run the migrations with `ihub migrate`")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
