-- End-to-end psql script for Tally's PostgreSQL wire front end (tests/clients/).
-- Run against a FRESH ledger (empty data directory, development mode):
--   psql -X -v ON_ERROR_STOP=0 -f tests/clients/psql.sql "host=127.0.0.1 port=$PORT user=tally dbname=tally"
-- tests/clients/psql_check.py runs it and asserts tests/clients/psql.checks. Output is unaligned and
-- tuples-only, each row prefixed by a tag; "STATE <name> <sqlstate>" lines show the SQLSTATE
-- of the statement just before them (00000 = success). psql (15) does not set :SQLSTATE for a
-- COPY FROM STDIN: a COPY's success shows in the rows it added, and a refused COPY's SQLSTATE
-- on stderr (psql.checks lines starting with "stderr: ").
-- The small ledger is settlement.md's worked example plus a few inferences; expected values
-- (lsns, rewards, balances, payouts_root) are worked out in psql.checks.
\set ON_ERROR_STOP 0
\pset pager off
\pset format unaligned
\pset tuples_only on
\pset footer off
\echo BEGIN psql.sql
SELECT version();
\echo STATE version :SQLSTATE

\echo == schema
\dt
\d contributions

\echo == load
-- text format (tab-separated), lsn 1-2
COPY datanets (datanet, owner) FROM STDIN;
dn-med	alice
dn-code	carol
\.
SELECT 'copied_datanets', count(*) FROM datanets;

-- CSV with a header line, lsn 3-6
COPY contributions (contribution, datanet, contributor, content_hash) FROM STDIN WITH (FORMAT csv, HEADER true);
contribution,datanet,contributor,content_hash
c1,dn-med,x,53284112287273201d12e1a6bb67cb8f3ff89b3f67cd18a7afcc6b7acc6475ce
c2,dn-med,y,21dccac777f280cdeca7cddc212eefaacc2001f526153e4106a769e48af93fa5
c3,dn-code,z,2c382113547216147f2a2b6b030bcf96efa789969b324b2721ac0001835f98fc
c4,dn-code,x,f34bea8e859f5351036d5cd4dff5819e6ddb0b029d0c54ab510125aef48a76e4
\.
SELECT 'copied_contributions', count(*) FROM contributions;

-- text format with \N for NULL (a base model has no base_model), lsn 7-8
COPY models (model, owner, base_model, datanets) FROM STDIN;
m-base	ann	\N	dn-med
m-adapter	bob	m-base	dn-code
\.
SELECT 'copied_models', count(*), count(base_model) FROM models;

-- CSV with quoted lists, lsn 9-12 (epoch 1); i1 is settlement.md's worked example
COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN WITH (FORMAT csv);
i1,m-adapter,u1,1001,"c1:0.9,c2:0.3,c3:0.3"
i2,m-base,u2,500,"c1:1,c2:1"
i3,m-base,u2,0,c1:1
i4,m-base,u3,100,"c1:0,c2:0"
\.
SELECT 'copied_inferences', count(*), sum(fee) FROM inferences;

-- no column list: the writable columns in surface.md's order; CSV with another delimiter; lsn 13
COPY revocations FROM STDIN WITH (FORMAT csv, DELIMITER ';');
c3;stolen data
\.
SELECT 'copied_revocations', count(*) FROM revocations;

\echo == refusals (none of these appends anything)
UPDATE balances SET earned = 0;
\echo STATE update_balances :SQLSTATE
UPDATE contributions SET contributor = 'mallory' WHERE contribution = 'c1';
\echo STATE update_contributions :SQLSTATE
DELETE FROM inferences WHERE inference = 'i1';
\echo STATE delete_inferences :SQLSTATE
TRUNCATE contributions;
\echo STATE truncate_contributions :SQLSTATE
DROP TABLE contributions;
\echo STATE drop_contributions :SQLSTATE
INSERT INTO balances (account, earned, settled, pending) VALUES ('mallory', 1, 1, 0);
\echo STATE insert_balances :SQLSTATE
COPY balances TO '/dev/null';
\echo STATE copy_to_file :SQLSTATE
INSERT INTO datanets (datanet, owner) VALUES ('dn-med', 'mallory');
\echo STATE duplicate_datanet :SQLSTATE
INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES ('c9', 'dn-med', 'mallory', '53284112287273201d12e1a6bb67cb8f3ff89b3f67cd18a7afcc6b7acc6475ce');
\echo STATE duplicate_content_hash :SQLSTATE
INSERT INTO revocations (contribution, reason) VALUES ('c3', 'again');
\echo STATE revoke_twice :SQLSTATE
INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES ('c9', 'dn-nowhere', 'mallory', '9a04aaae1288ec6379784ef58a2de0ac69ca88cdb1e04d13f14d5adf4896f0b1');
\echo STATE unknown_datanet :SQLSTATE
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i9', 'm-nowhere', 'u1', 10, 'c1:1');
\echo STATE unknown_model :SQLSTATE
INSERT INTO contributions (contribution, datanet, contributor) VALUES ('c9', 'dn-med', 'mallory');
\echo STATE missing_content_hash :SQLSTATE
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i9', 'm-base', 'u1', 10, 'c3:1');
\echo STATE outside_lineage :SQLSTATE
INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES ('c 9', 'dn-med', 'mallory', '9a04aaae1288ec6379784ef58a2de0ac69ca88cdb1e04d13f14d5adf4896f0b1');
\echo STATE bad_id :SQLSTATE
INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES ('c9', 'dn-med', 'mallory', '9A04AAAE1288EC6379784EF58A2DE0AC69CA88CDB1E04D13F14D5ADF4896F0B1');
\echo STATE bad_hash :SQLSTATE
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i9', 'm-base', 'u1', 1001.9, 'c1:1');
\echo STATE fractional_fee :SQLSTATE
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i9', 'm-base', 'u1', 1099511627777, 'c1:1');
\echo STATE fee_over_2_40 :SQLSTATE
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i9', 'm-base', 'u1', 10, 'c1:-1');
\echo STATE negative_score :SQLSTATE
INSERT INTO models (model, owner, base_model, datanets) VALUES ('m-adapter2', 'bob', 'm-adapter', 'dn-code');
\echo STATE adapter_of_adapter :SQLSTATE
INSERT INTO policies (protocol_bps, model_bps, base_bps) VALUES (5000, 5000, 1);
\echo STATE policy_sum :SQLSTATE
INSERT INTO settlements (epoch) VALUES (7);
\echo STATE settle_not_open_epoch :SQLSTATE

-- refused COPYs: nothing of the batch is appended. psql does not set :SQLSTATE for a failed
-- COPY, so VERBOSITY sqlstate makes psql print just "ERROR:  <sqlstate>" on stderr; each of
-- these three COPYs expects a different SQLSTATE, and every other error is printed with its message.
\set VERBOSITY sqlstate
\warn refused COPY 1: a bad second row (fee 1001.9) -> 22023
COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN WITH (FORMAT csv);
i6,m-base,u4,10,c1:1
i7,m-base,u4,1001.9,c1:1
i8,m-base,u4,10,c2:1
\.
\warn refused COPY 2: an inference id repeated inside the batch -> 23505
COPY inferences (inference, model, consumer, fee, attributions) FROM STDIN;
i6	m-base	u4	10	c1:1
i6	m-base	u4	10	c2:1
\.
\warn refused COPY 3: a contribution into an unknown datanet, after a good row -> 23503
COPY contributions (contribution, datanet, contributor, content_hash) FROM STDIN WITH (FORMAT csv, HEADER true);
contribution,datanet,contributor,content_hash
c7,dn-med,mallory,3dc48face2b74af39022e1a9c5d77c17326270c16a5f97289c959d109521cf79
c8,dn-nowhere,mallory,e74e88144df10174ad49dd76f066a51b009685bc85f18e5a4f0c18493347add5
\.
\set VERBOSITY default
SELECT 'after_refused_copies', count(*) FROM inferences WHERE inference IN ('i6', 'i7', 'i8');
SELECT 'after_refused_copies_contributions', count(*) FROM contributions WHERE contributor = 'mallory';

-- an error inside BEGIN: the block answers 25P02 until ROLLBACK, which discards it
BEGIN;
INSERT INTO datanets (datanet, owner) VALUES ('dn-tx', 'tom');
\echo STATE tx_first_insert :SQLSTATE
INSERT INTO datanets (datanet, owner) VALUES ('dn-med', 'tom');
\echo STATE tx_duplicate :SQLSTATE
SELECT 1;
\echo STATE tx_aborted_select :SQLSTATE
INSERT INTO datanets (datanet, owner) VALUES ('dn-tx2', 'tom');
\echo STATE tx_aborted_insert :SQLSTATE
ROLLBACK;
\echo STATE tx_rollback :SQLSTATE
SELECT 'tx_rolled_back', count(*) FROM datanets WHERE datanet IN ('dn-tx', 'dn-tx2');

\echo == settle the open epoch (lsn 14), then epoch 2
SELECT epoch AS open_epoch FROM epochs WHERE status = 'open' \gset
\echo open_epoch :open_epoch
INSERT INTO settlements (epoch) VALUES (:open_epoch);
\echo STATE settle_open_epoch :SQLSTATE
INSERT INTO settlements (epoch) VALUES (:open_epoch);
\echo STATE settle_closed_epoch :SQLSTATE
-- lsn 15, epoch 2
INSERT INTO inferences (inference, model, consumer, fee, attributions) VALUES ('i5', 'm-adapter', 'u1', 10000, 'c4:2');
\echo STATE insert_inference :SQLSTATE

-- a block that commits: a datanet and its first contribution (lsn 16-17)
BEGIN;
INSERT INTO datanets (datanet, owner) VALUES ('dn-tx', 'tom');
INSERT INTO contributions (contribution, datanet, contributor, content_hash) VALUES ('c5', 'dn-tx', 'tom', 'ffeb9790c3f34623d1cf466be2d8b0f88dc92b0dd7921ac2b64936a755550c83');
COMMIT;
\echo STATE tx_commit :SQLSTATE
SELECT 'tx_committed', datanet, owner, contributions FROM datanets WHERE datanet = 'dn-tx';

\echo == reads
SELECT 'bal', account, earned, settled, pending FROM balances ORDER BY account;
SELECT 'no_balance_z', count(*) FROM balances WHERE account = 'z';
SELECT 'top', row_number() OVER (ORDER BY earned DESC, account) AS pos, account, earned FROM balances ORDER BY pos LIMIT 3;
SELECT 'dn_earned', d.datanet, d.owner, count(c.contribution), sum(c.earned)
  FROM datanets d JOIN contributions c ON c.datanet = d.datanet
  GROUP BY d.datanet, d.owner ORDER BY d.datanet;
SELECT 'datanet', datanet, contributions, earned FROM datanets ORDER BY datanet;
SELECT 'contrib', contribution, contributor, CASE WHEN revoked THEN 'revoked' ELSE 'valid' END, inferences, earned
  FROM contributions ORDER BY contribution;
SELECT 'model', model, owner, coalesce(base_model, '-'), inferences, fees FROM models ORDER BY model;
SELECT 'inf', inference, model, fee, epoch, attributions FROM inferences ORDER BY inference;
SELECT 'attr', inference, contribution, contributor, weight, reward FROM attributions ORDER BY inference, contribution;
SELECT 'reward', epoch, account, role, amount FROM rewards ORDER BY epoch, account, role;
SELECT 'payout', epoch, account, amount FROM payouts ORDER BY epoch, account;
SELECT 'epoch', epoch, status, opened_lsn, closed_lsn, inferences, fees FROM epochs ORDER BY epoch;
SELECT 'settlement', epoch, lsn, total, payouts_root FROM settlements ORDER BY epoch;
SELECT 'revocation', contribution, reason, lsn FROM revocations ORDER BY lsn;
SELECT 'policies', count(*) FROM policies;
SELECT 'events', count(*), min(lsn), max(lsn) FROM events;
SELECT 'kind', kind, count(*) FROM events GROUP BY kind ORDER BY kind;
SELECT 'event_body', lsn, body FROM events WHERE lsn IN (1, 15) ORDER BY lsn;
\echo END psql.sql
