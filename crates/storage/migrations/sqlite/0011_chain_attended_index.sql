-- The worker polls for minted tokens of admitted tickets without an
-- attended mark; this partial index holds only the confirmed tokens not yet
-- marked, in ticket order, so once a gate's tickets are marked the poll no
-- longer reads them.
CREATE INDEX chain_tokens_unattended ON chain_tokens (state, attended, ticket_id) WHERE state = 'confirmed' AND attended = FALSE;
