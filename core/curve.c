/* CurveZMQ keys and the ZAP handler; see curve.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "sf_internal.h"

/* Reads one Z85 key (40 characters, surrounding whitespace allowed) from dir/name. */
static int read_key(const char *dir, const char *name, char out[41], int secret) {
    char path[4200], buf[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return sf_fail("curve keys: cannot read %s: %s (make a key directory with 'saeflow keygen %s' and copy it to every host)", path,
                       strerror(errno), dir);
    struct stat st;
    if (secret && fstat(fd, &st) == 0 && (st.st_mode & 077)) {
        close(fd);
        return sf_fail("curve keys: %s can be read by other users (mode %03o): chmod 600 %s", path, (unsigned)(st.st_mode & 0777), path);
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return sf_fail("curve keys: reading %s: %s", path, strerror(errno));
    buf[n] = 0;
    char *s = buf, *e = buf + n;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t')) *--e = 0;
    uint8_t raw[32];
    if (e - s != 40 || !zmq_z85_decode(raw, s))
        return sf_fail("curve keys: %s is not a CURVE key (expected 40 Z85 characters as 'saeflow keygen' writes)", path);
    memcpy(out, s, 41);
    return SF_OK;
}

int sf_curve_load(const char *dir, sf_curve_keys *k) {
    if (!zmq_has("curve")) return sf_fail("curve keys: this libzmq was built without CURVE support (libsodium); cannot encrypt edges");
    if (read_key(dir, "public.key", k->public_z85, 0) != SF_OK || read_key(dir, "secret.key", k->secret_z85, 1) != SF_OK) return SF_ERR;
    char derived[41];
    if (zmq_curve_public(derived, k->secret_z85) != 0 || strcmp(derived, k->public_z85) != 0)
        return sf_fail("curve keys: %s/secret.key and %s/public.key are not one keypair (regenerate with 'saeflow keygen')", dir, dir);
    zmq_z85_decode(k->public_key, k->public_z85);
    return SF_OK;
}

static int write_key(const char *path, const char *z85, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) return sf_fail("%s: %s%s", path, strerror(errno), errno == EEXIST ? " (remove the old keys first; keygen never overwrites)" : "");
    int ok = fchmod(fd, mode) == 0 && write(fd, z85, 40) == 40 && write(fd, "\n", 1) == 1;
    ok &= close(fd) == 0;
    return ok ? SF_OK : sf_fail("%s: %s", path, strerror(errno));
}

int sf_curve_keygen_main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: saeflow keygen DIR   (writes DIR/public.key and DIR/secret.key for a pipeline's 'curve \"DIR\"' line)\n");
        return 2;
    }
    const char *dir = argv[2];
    char pub[41], sec[41], path[4200];
    if (!zmq_has("curve")) {
        fprintf(stderr, "saeflow: this libzmq was built without CURVE support\n");
        return 1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "saeflow: cannot make %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "saeflow: zmq_curve_keypair: %s\n", zmq_strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/secret.key", dir);
    int rc = write_key(path, sec, 0600);
    if (rc == SF_OK) {
        snprintf(path, sizeof path, "%s/public.key", dir);
        rc = write_key(path, pub, 0644);
        if (rc != SF_OK) {
            snprintf(path, sizeof path, "%s/secret.key", dir);
            unlink(path); /* no half keypair left behind */
        }
    }
    memset(sec, 0, sizeof sec);
    if (rc != SF_OK) {
        fprintf(stderr, "saeflow: %s\n", sf_last_error());
        return 1;
    }
    printf("wrote %s/public.key and %s/secret.key (mode 600); copy %s to every host and add 'curve \"%s\"' to the pipeline\n", dir, dir,
           dir, dir);
    return 0;
}

int sf_curve_server(void *sock, const sf_curve_keys *k) {
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->secret_z85, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "saeflow", 7) != 0)
        return sf_fail("setting CURVE server options: %s", zmq_strerror(errno));
    return SF_OK;
}

int sf_curve_client(void *sock, const sf_curve_keys *k) {
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, k->public_z85, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k->public_z85, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->secret_z85, 40) != 0)
        return sf_fail("setting CURVE client options: %s", zmq_strerror(errno));
    return SF_OK;
}

/* ZAP (RFC 27) request: version, request id, domain, address, routing id, mechanism, credentials.
 * Reply: version, request id, status code, status text, user id, metadata. */
static void zap_answer(sf_zap *z) {
    zmq_msg_t part[8], extra;
    int n = 0, more = 1;
    while (more) { /* parts beyond 8 are read into extra and dropped */
        zmq_msg_t *m = n < 8 ? &part[n] : &extra;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, z->sock, 0) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (m == &extra) zmq_msg_close(m);
        else n++;
    }
    if (n < 6) { /* not a ZAP request: nothing sensible to answer */
        for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
        return;
    }
    char address[64] = "?";
    size_t alen = zmq_msg_size(&part[3]) < sizeof address - 1 ? zmq_msg_size(&part[3]) : sizeof address - 1;
    memcpy(address, zmq_msg_data(&part[3]), alen);
    address[alen] = 0;
    int ok = n == 7 && zmq_msg_size(&part[5]) == 5 && memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
             zmq_msg_size(&part[6]) == 32 && memcmp(zmq_msg_data(&part[6]), z->allowed, 32) == 0;
    if (!ok) {
        atomic_fetch_add(&z->refused, 1);
        sf_log(SF_LOG_WARN, "refused a connection from %s: it does not hold this pipeline's CURVE key", address);
    }
    const char *code = ok ? "200" : "400", *text = ok ? "OK" : "CURVE key not authorised";
    zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(z->sock, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
    zmq_send(z->sock, code, 3, ZMQ_SNDMORE);
    zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
}

static void *zap_main(void *arg) {
    sf_zap *z = arg;
    sf_log_set_thread_name("zap");
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {.socket = z->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) > 0) zap_answer(z);
    }
    return NULL;
}

int sf_zap_start(sf_zap *z, void *zctx, const sf_curve_keys *k) {
    memset(z, 0, sizeof *z);
    memcpy(z->allowed, k->public_key, 32);
    z->sock = zmq_socket(zctx, ZMQ_REP);
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(z->sock, "inproc://zeromq.zap.01") != 0) {
        zmq_close(z->sock);
        z->sock = NULL;
        return sf_fail("starting the CURVE authentication handler: %s", zmq_strerror(errno));
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        zmq_close(z->sock);
        z->sock = NULL;
        return sf_fail("cannot start the CURVE authentication thread");
    }
    return SF_OK;
}

void sf_zap_stop(sf_zap *z) {
    if (!z->sock) return;
    atomic_store(&z->stop, 1);
    pthread_join(z->thread, NULL);
    zmq_close(z->sock);
    z->sock = NULL;
}
