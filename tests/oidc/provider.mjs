// An OpenID Provider for the tests: the certified `oidc-provider` package, on a loopback port.
//
// Usage: node provider.mjs PORT JWKS_FILE AUDIENCE USER_IDS
//   JWKS_FILE: a private JSON Web Key Set; the first key signs, every key is published at /jwks.
//   USER_IDS:  comma-separated user ids; each one is a client (id = the user id, secret
//              "secret-<id>") allowed the client_credentials grant, so the access token's `sub`
//              is that user's id.
// Access tokens for AUDIENCE (the `resource` parameter, RFC 8707) are JWTs. Prints "ready" on
// stdout once it listens.
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const [port, jwksFile, audience, userIds] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(jwksFile, 'utf8'));
const signingAlg = jwks.keys[0].alg;

const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks,
  clientDefaults: { id_token_signed_response_alg: signingAlg },
  clients: userIds.split(',').map((id) => ({
    client_id: id,
    client_secret: `secret-${id}`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  })),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== audience) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'messages',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: signingAlg } },
        };
      },
    },
  },
});

const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
