// Signs test tokens with the provider's own private key (or a stray key), so
// the login tests can present expired / wrong-audience / unknown-kid tokens
// whose signatures are otherwise perfect.
//
//   node sign.mjs KEYS_FILE 'CLAIMS_JSON' [--stray-key]
import { createPrivateKey, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [keysFile, claimsJson, ...flags] = process.argv.slice(2);
let jwk = JSON.parse(readFileSync(keysFile, 'utf8')).keys[0];
if (flags.includes('--stray-key')) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID() };
}
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const input = `${b64({ alg: 'RS256', typ: 'at+jwt', kid: jwk.kid })}.${b64(JSON.parse(claimsJson))}`;
const key = createPrivateKey({ key: jwk, format: 'jwk' });
process.stdout.write(`${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`);
