"""What the shop's web handlers call: plain SQLAlchemy on the models, no web framework needed to run it.
A FastAPI app would wrap each function in a route and get the Session from a dependency; it never runs
``alembic upgrade`` at startup — the DatabaseMigration does, once, and gated pods wait for it."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, delete, func, select
from sqlalchemy.orm import Session

from shop_sa.models import Order, User


def engine(url: str | None = None) -> Engine:
    """The app's engine, from DATABASE_URL like the migration Job's (psycopg 3 driver)."""
    raw = url or os.environ["DATABASE_URL"]
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            raw = "postgresql+psycopg://" + raw.removeprefix(prefix)
    return create_engine(raw)


def register(session: Session, email: str, bio: str | None = None) -> User:
    user = User(email=email, bio=bio)
    session.add(user)
    session.flush()
    return user


def place_order(session: Session, user: User, total_cents: int) -> Order:
    order = Order(user=user, total_cents=total_cents)
    session.add(order)
    session.flush()
    return order


def spend_by_email(session: Session) -> dict[str, int]:
    """Total spent per user (users without orders included, at 0)."""
    rows = session.execute(
        select(User.email, func.coalesce(func.sum(Order.total_cents), 0))
        .outerjoin(Order, Order.user_id == User.id)
        .group_by(User.email)
    )
    return {email: int(total) for email, total in rows}


def forget(session: Session, email: str) -> int:
    """Delete a user on request; the database deletes their orders (ON DELETE CASCADE). Returns how many
    users were deleted."""
    result = session.execute(delete(User).where(User.email == email))
    return int(result.rowcount)  # type: ignore[attr-defined]
