-- The policy last set on each collection (owned by `entrada-chain`): whether
-- transfers are locked to the custodian, the event's end in unix seconds, and
-- the ERC-2981 royalty in basis points. The pipeline compares them with the
-- event's export setting, end and resale royalty, and pushes a change to the
-- chain. NULL: not known (a collection found already created, or created
-- before this migration); the pipeline sets it once.
ALTER TABLE chain_collections ADD COLUMN policy_locked BOOLEAN;
ALTER TABLE chain_collections ADD COLUMN policy_end BIGINT;
ALTER TABLE chain_collections ADD COLUMN policy_royalty_bps BIGINT;
