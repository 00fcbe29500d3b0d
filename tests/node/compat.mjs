// The node-postgres leg of the client compatibility script. Prints the
// results as JSON; the harness compares gateway and direct runs.
//   node compat.mjs '<pg.Client config JSON>' SCHEMA
import pg from 'pg';

const [cfgJson, schema] = process.argv.slice(2);
const cfg = JSON.parse(cfgJson);
const out = [];
const client = new pg.Client(cfg);
await client.connect();
const q = (text, values) => client.query(text, values);

await q(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await q(`CREATE SCHEMA ${schema}`);
await q(`SET search_path = ${schema}`);
await q('CREATE TABLE t(id int primary key, n numeric(12,2), f float8, b bytea, ts timestamptz, j jsonb, a int[], u uuid, txt text)');
for (let i = 1; i <= 20; i++) {
  await q('INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)', [
    i, (i * 10.07).toFixed(2), i * 1.5, Buffer.from([i, 0, 255]),
    new Date(Date.UTC(2024, 0, 1, i)), JSON.stringify({ k: i, s: 'é' }), [i, i + 1],
    `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`, `héllo ${i}`,
  ]);
}
out.push((await q('SELECT * FROM t ORDER BY id')).rows);
// Binary results (raw bytes per column).
const bin = await client.query({ text: 'SELECT id, n, f, ts, u FROM t ORDER BY id', binary: true });
out.push(bin.rows.map((r) => Object.values(r).map((v) => (Buffer.isBuffer(v) ? v.toString('hex') : v))));
for (const i of [3, 5, 7, 9]) {
  out.push((await client.query({ name: 'sel', text: 'SELECT txt, n FROM t WHERE id = $1', values: [i] })).rows);
}
await q('BEGIN');
await q('INSERT INTO t(id) VALUES (100)');
await q('ROLLBACK');
out.push((await q('SELECT count(*) FROM t')).rows);
try {
  await q('SELECT 1/0');
} catch (e) {
  out.push(e.code);
}
out.push((await q('SELECT 42 AS x')).rows);
const got = new Promise((resolve) => client.once('notification', (n) => resolve([n.channel, n.payload])));
await q('LISTEN ch');
await q("NOTIFY ch, 'hello'");
out.push(await got);
// Cancel: node-postgres sends a CancelRequest with the key it was given.
const started = Date.now();
const sleeping = q('SELECT pg_sleep(20)').catch((e) => e.code);
await new Promise((r) => setTimeout(r, 500));
await new Promise((resolve, reject) => {
  const canceller = new pg.Client(cfg);
  canceller.cancel(client, client.activeQuery);
  setTimeout(resolve, 50);
  canceller.on('error', reject);
});
out.push(await sleeping);
if (Date.now() - started > 10000) throw new Error('cancel took too long');
out.push((await q("SELECT 'still usable' AS s")).rows);
await q(`DROP SCHEMA ${schema} CASCADE`);
await client.end();
process.stdout.write(JSON.stringify(out));
