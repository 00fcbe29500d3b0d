// A real OpenID provider on loopback for hoop's login tests: oidc-provider
// issuing client-credentials JWT access tokens (RS256) for the audience
// "urn:hoop", with a `groups` claim per client.
//
//   node oidc-server.mjs PORT KEYS_FILE [--rotate]
//
// KEYS_FILE holds the private JWKS; it is created with one RSA key when
// missing. --rotate prepends a new key (the provider signs with the first),
// keeping the old one published, as a real rotation does.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, ...flags] = process.argv.slice(2);
if (!port || !keysFile) {
  console.error('usage: node oidc-server.mjs PORT KEYS_FILE [--rotate]');
  process.exit(2);
}

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = existsSync(keysFile) ? JSON.parse(readFileSync(keysFile, 'utf8')).keys : [];
if (keys.length === 0 || flags.includes('--rotate')) keys = [newKey(), ...keys];
writeFileSync(keysFile, JSON.stringify({ keys }));

const GROUPS = {
  'ci-fraud': ['fraud-agents'],
  'ci-admin': ['payments-admins'],
  'ci-nobody': ['interns'],
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: Object.keys(GROUPS).map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  jwks: { keys },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:hoop',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'db',
        audience: 'urn:hoop',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => ({ groups: GROUPS[token.clientId] ?? [] }),
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port} kid=${keys[0].kid}`);
});
