from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "review" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "rating" SMALLINT NOT NULL,
    "body" TEXT NOT NULL,
    "customer_id" INT NOT NULL REFERENCES "customer" ("id") ON DELETE CASCADE,
    "product_id" INT NOT NULL REFERENCES "product" ("id") ON DELETE CASCADE
);
        ALTER TABLE "customer" ADD "bio" TEXT;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "customer" DROP COLUMN "bio";
        DROP TABLE IF EXISTS "review";"""


MODELS_STATE = (
    "eJztml1P2zAUhv9KlSsmMQRZB9PuQlu2btBONNoQ0xS5idtaJHbnOEDF+t9nOx/O9+hGYa"
    "ly1eb4nNh57Pi8Pu2D5hEHuv5BL/AZ8SDV3nceNAw8yL8U2vY7GlguVYswMDB1pbOd9pr6"
    "jAKbcfsMuD7kJgf6NkVLhgjmVhy4rjASmzsiPFemAKOfAbQYmUO2kOP5/oObEXbgPfTjy+"
    "WNNUPQdTLDRY7oW9ottlpK2xCzM+koeptaNnEDDyvn5YotCE68EWbCOocYUsCguD2jgRi+"
    "GF30pPEThSNVLuEQUzEOnIHAZanHnVrKplnWaGxak4FpWdoGgGyCBVw+VF8+/VwM4bV+1D"
    "3pvntz3H3HXeQwE8vJOuxagQkDJZ6Rqa1lO2Ag9JCMFVT5WcDaWwBazjX2z5HlQ86TjTnW"
    "oY0Niq1aT88B1wP3lgvxnC345dHhYQ3Kr8Zl76Nxuce9XokuCX8BwjdjFDXpYZvgrfhCDy"
    "B3E8BJwNMQftnFm+Grv337CL7cq5KvbMvynSJSpGvC+4ptIXL/K7YRuf9l8dawNAdXpriz"
    "5/s/3TTCvQvjStL1VlHL+Xj0IXZPIe+dj085abEXz25SG4cwTIF9cweoY2Va1JQQ6kDqF2"
    "flNIo7+3wJXSAftzgVUU4ai3s0cEdZxwsutkbrJrNmKbxF8O4fCV3Km+wSIrG2iE6qVlux"
    "ydO9vAVgMJePJPoWPWXWU4n4SRZatfIhiUsre3ZF9tgUChIWYEW4fd7CkAfLCWcjc6SdKP"
    "Qg/tLA95NvT8AZY3eltq7KPDO8GExM4+JLJtn0DXMgWvRMoomte8e59J7cpPNtaH7siMvO"
    "9Xg0kHiJz+ZU9qj8zGtNjAkEjFiY3FnASa3O2BpTy2y8jDBQIsb60EYecMvnO4nJT3UYdB"
    "AFb2uiD59fPfQHveGFcb53pO/rcq74DCIG0yKtW9C58fHQ2mi7ykX9ed9qwvvzBFtXQXcV"
    "QRcpnxEK0Rx/hisJe8hHBbBddlorOfg3DHKViOBmCu6SLJpfYJwBf3IYLuaeMekZ/YG2rh"
    "a125QkXyhxAikmCqIkbqqVJcuUUytMmvR21wmTth6j6gWPqsfoNfUYvViPWVJklwCulQBJ"
    "zMtIgJepISQq4HADFZAeRoFxdVUmF9ZWZ7ZYnWmLD89efIholSR6xbE6z1Pl06b5XUnznI"
    "PovgB2wvOIW0lXRe3SSemNfnKc8BUXdWgnPCedx3xTPwMQZ7XR7wCR//PJJk1rcKZpT/rb"
    "2yTS2lSe6DYDmw1quf65gpI6OP9jASV1Tm8Y4sfWT7Krq7x8UrY5tNWphlenDMgPvQutRL"
    "NGLbWaFSifVrM2adus06y3kPqlB/vq6lQqZBcLVNv4Q4t4qTYgHLnvIN2t/B2L98ggLsn9"
    "nybjUYVyVSH5+h+yWedXx0V+gyVAGVwBo/7ckD8i7Gd/qxU32LBC9fTJbP0bFMzEyg=="
)
