/* curve.h — CurveZMQ for tcp/ipc edges between hosts.
 *
 * A pipeline's `curve "DIR"` line names a key directory made by `saeflow keygen DIR`:
 *     DIR/public.key   the cluster's public key (Z85, 40 characters)
 *     DIR/secret.key   its secret key (Z85; mode 0600, refused if group/other can read it)
 * Every host of the cluster holds a copy. Producers' ROUTERs are CURVE servers with the secret
 * key; consumers' DEALERs are CURVE clients with the same keypair, so a peer must hold the secret
 * to complete a handshake either way. A ZAP handler in each process additionally accepts only
 * clients presenting the cluster's public key (without a ZAP handler libzmq would accept any
 * client key), and logs every refusal with the peer's address. */
#ifndef SF_CURVE_H
#define SF_CURVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct sf_curve_keys {
    char public_z85[41], secret_z85[41];
    uint8_t public_key[32];
} sf_curve_keys;

/* Loads and checks DIR/public.key and DIR/secret.key (readable, Z85, a matching pair, secret not
 * readable by others). SF_OK or SF_ERR with sf_last_error() saying what to fix. */
int sf_curve_load(const char *dir, sf_curve_keys *k);

/* `saeflow keygen DIR`: makes DIR (0700) and writes a new keypair; refuses to overwrite one. */
int sf_curve_keygen_main(int argc, char **argv);

/* Socket options: a CURVE server (producer ROUTER) or client (consumer DEALER). Before bind/connect. */
int sf_curve_server(void *sock, const sf_curve_keys *k);
int sf_curve_client(void *sock, const sf_curve_keys *k);

/* The ZAP handler: a thread answering libzmq's authentication requests for one context. */
typedef struct sf_zap {
    void *sock;
    pthread_t thread;
    atomic_int stop, refused;
    uint8_t allowed[32];
} sf_zap;

int sf_zap_start(sf_zap *z, void *zctx, const sf_curve_keys *k);
void sf_zap_stop(sf_zap *z);

#endif
