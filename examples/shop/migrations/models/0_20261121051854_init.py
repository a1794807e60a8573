from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "customer" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(100) NOT NULL,
    "email" VARCHAR(255) NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS "product" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "price" DECIMAL(10,2) NOT NULL
);
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztl1FP2zAUhf9KlScmMVSyMtDeQmAaE7QTVNOkabLc5Da16tjBdjYQ63+f7SR1mpSISm"
    "yMqk9tzz22r7/Gx+2Dl/IYqDwIc6l4CsL70HvwGE5Bv2nV9nsezjJXMYLCE2rNUd01kUrg"
    "SGl9iqkELcUgI0EyRTjTKsspNSKPtJGwxEk5I7c5IMUTUDPbz/cfWiYshjuQ1cdsjqYEaL"
    "zSLonN2lZH6j6z2gVTH63RrDZBEad5ypw5u1czzpZuwpRRE2AgsAIzvRK5ad90V+602lHR"
    "qbMULdbGxDDFOVW17U6Q0zyEhqMxujkfI+RtACjizMDVrUq7+8S08NY/HBwPTt69H5xoi2"
    "1zqRwviqUdmGKgxTMcewtbxwoXDsvYQbWvLazhDIv1XCt/g6xuuUm24tiFthIcW/c8/Qu4"
    "Kb5DFFiiZvrjYb/fgfJrcB1+Cq73tOuNWZLrA1CcjGFZ8oua4e34QooJ3QTwcsDzEH7Zh3"
    "eFr3909AS+2vUoX1tbLExCTOe1x9kIExzNf2ERo1aF+/wxb7uU+mlTwQwnFp3ZpNlBmZtf"
    "BI9zG4KtSK1KnYma1Uy7QN0F6tYFqv+kQPU7AtVvB2omSLQG8BlEJMV0PePlmAbkuBh0UA"
    "5+hcA7+J6dhxdXwaW+lPZ9C1jeUqKgjn7Q/4/iNAD9Lc3WpWlZ6QxT7Dy7LN2WLP0JQpqW"
    "NojT2pBtTNTn+glVT1RzqDYgXNq3kO5f+QOgV1RQHO1Vwp9vRsP1hGtDmhcWiVTvd48S2c"
    "qKV0C7A66BYWZOpb6l6kz3roJvTdzh5ejUwuFSJcLOYic4fenLbPEHALqJmw=="
)
