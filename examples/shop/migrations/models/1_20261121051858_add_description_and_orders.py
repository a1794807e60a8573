from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "order" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL,
    "total" DECIMAL(12,2) NOT NULL,
    "customer_id" INT NOT NULL REFERENCES "customer" ("id") ON DELETE CASCADE
);
        ALTER TABLE "product" ADD "description" TEXT;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "product" DROP COLUMN "description";
        DROP TABLE IF EXISTS "order";"""


MODELS_STATE = (
    "eJztmFtv2jAUgP8KyhOVuopmtKv2lgJdWQtUJdqqTpNlEhOiJnbqOGtRx3+f7dyvK1NZBe"
    "IJci7x8Wf7nOO8KC4xkeMf9QKfERdR5XPrRcHQRfxPSXfYUqDnpRohYHDmSGMjazXzGYUG"
    "4/I5dHzERSbyDWp7zCaYS3HgOEJIDG5oYysVBdh+DBBgxEJsIeP58ZOLbWyiZ+THj94DmN"
    "vIMXPh2qYYW8oBW3pSNsTsQhqK0WbAIE7g4tTYW7IFwYm1jZmQWggjChkSr2c0EOGL6KKZ"
    "xjMKI01NwhAzPiaaw8BhmenOQCpTABhPdDAd6AAoawAyCBZweai+nL0lQvigHnc/dc8+nn"
    "bPuIkMM5F8WoVDp2BCR4lnrCsrqYcMhhaScQpV/paw9haQVnON7QtkechFsjHHJrSxIGWb"
    "7qf/AdeFz8BB2GIL/njc6TSg/Kbd9i612za3OhBDEn4AwpMxjlRqqBO8U77IhbazDuDE4W"
    "0Iv+/mzfFVT05ewZdb1fKVutVKZIj5Q2Y7C8EMGg9PkJogp0kXglATUb+8EueR38XVLXKg"
    "nGEZfpQpJ+IdW7jPV/Emi6XRPpAkiUrqUJZVruoWJRBDS05JjC1GysGqqDcJxfpiQxKTfa"
    "XZlUpjUCRIAMjKcPtcw2wXVRPOexZIm5HrUfxnC8+nwidoTrCzjM9lPWd9OBpMdW10I4Zz"
    "ff/Rkfw0fSA0qpQuC9L2aSGjJi9pfR/qly3x2LqfjAcSL/GZReWIqZ1+r4iYYMAIwOQJQD"
    "OzO2NpTC1X/xhhsKL+9ZFhu9CpXu/Ep7jUodNR5Lyphe5sNgtXrWp/0BuOtOv2sXqoyrXi"
    "K2gzlK2L3VJrEXfkYK10VfD6e97ahvPzBqmr1FSUQZcpXxCKbAtfoaWEPeRRQWxUNcgVd6"
    "0tg1zXRHAxhU9JFS1uMM6AzxyFm7mnTXtaf6Cs6ju2TbYkN5SYgWwmSk1JrGpsS7yM0b4x"
    "2abT3dSY7K/A6RXtVVdgteEKrJavwB61jQrAjS1A4vM+LcDm02hjF9BZowvIhlFirKPnmu"
    "RQcPunvRwlgS0gqw/u9FzDHG/Y9ki7O8g1zdeT8ZfYPLPBe9eT8/U+PWyykGmIn49FVR2L"
    "NI1lDKY2+yq2K1XsF6J+ZQ6oL2QZl12sZW/1uTGbbcWhWoNwZL6DdDfysZyPyBCu+D70dT"
    "oZ11xnU5diq2AbrPW75dj+Nl5pG+AKGM3FrFi3DvOfdcQL3r2Yrf4Axo8hyg=="
)
