"""Models of the example shop (stage 3 of 3 in regenerate_migrations.py)."""

from tortoise import fields
from tortoise.models import Model


class Customer(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=255, unique=True)
    bio = fields.TextField(null=True)


class Product(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    price = fields.DecimalField(max_digits=10, decimal_places=2)
    description = fields.TextField(null=True)


class Order(Model):
    id = fields.IntField(primary_key=True)
    customer = fields.ForeignKeyField("models.Customer", related_name="orders")
    created_at = fields.DatetimeField(auto_now_add=True)
    total = fields.DecimalField(max_digits=12, decimal_places=2, default=0)


class Review(Model):
    id = fields.IntField(primary_key=True)
    product = fields.ForeignKeyField("models.Product", related_name="reviews")
    customer = fields.ForeignKeyField("models.Customer", related_name="reviews")
    rating = fields.SmallIntField()
    body = fields.TextField(default="")
