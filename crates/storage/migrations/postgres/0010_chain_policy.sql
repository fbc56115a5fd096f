-- The transfer policy last set on each collection (owned by `entrada-chain`):
-- whether transfers are locked to the custodian, and the event's end in unix
-- seconds. The pipeline compares them with the event's export setting and end,
-- and pushes a change to the chain. NULL: not known (a collection found already
-- created, or created before this migration); the pipeline sets it once.
ALTER TABLE chain_collections ADD COLUMN policy_locked BOOLEAN;
ALTER TABLE chain_collections ADD COLUMN policy_end BIGINT;
