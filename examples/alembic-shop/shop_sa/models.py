"""The shop's schema as SQLAlchemy 2.0 declarative models: what the app imports, and what env.py hands
to Alembic as ``target_metadata`` so that ``alembic revision --autogenerate`` writes the revisions and
``alembic check`` proves head matches these classes (tests/runner/test_alembic_models.py)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Constraint names spelled as PostgreSQL names them by default, so that autogenerate writes explicit
# names (a revision that drops a constraint must name it) and a database created without this
# convention — e.g. one adopted with spec.baseline — has the same names.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "ix": "ix_%(column_0_label)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    bio: Mapped[str | None] = mapped_column(Text)
    # The database deletes a user's orders (ON DELETE CASCADE); passive_deletes lets it.
    orders: Mapped[list[Order]] = relationship(back_populates="user", passive_deletes=True)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    total_cents: Mapped[int]
    user: Mapped[User] = relationship(back_populates="orders")
