/*
 * cocolab-doe: an SPDM 1.2 requester that authenticates a PCI function over its DOE mailbox,
 * from user space, through the function's config space in sysfs: the path a kernel CMA
 * requester takes, on any kernel.
 *
 *   cocolab-doe BDF ROOT.pem [TIMEOUT_MS]
 *
 * Steps, one JSON line each: discovery (the DOE protocols), version, capabilities,
 * algorithms, digests, certificate (the chain, in portions), chain (verified against ROOT),
 * san (the leaf's CMA SubjectAltName against this function's IDs), challenge (the signature
 * over the transcript), measurements (signed, read twice, which must agree). The first step
 * that fails ends the run with exit status 1; a usage error is 2.
 *
 * References: PCIe r6.0 §6.30 and §7.9.24 (DOE), DSP0274 1.2 (SPDM), PCIe CMA §6.31.
 * Linked statically against OpenSSL's libcrypto for X.509 and ECDSA.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DOE_CAP_ID 0x002e
#define DOE_CTRL 0x08
#define DOE_STATUS 0x0c
#define DOE_WRITE 0x10
#define DOE_READ 0x14
#define DOE_CTRL_ABORT (1u << 0)
#define DOE_CTRL_GO (1u << 31)
#define DOE_STATUS_BUSY (1u << 0)
#define DOE_STATUS_ERROR (1u << 2)
#define DOE_STATUS_READY (1u << 31)
#define DOE_TYPE_DISCOVERY 0
#define DOE_TYPE_CMA 1
#define MAX_DW 1024

#define BUF 8192
#define NONCE 32

static int cfg = -1;
static unsigned doe;             /* offset of the DOE extended capability */
static unsigned timeout_ms = 1000; /* PCIe r6.0 §6.30.2: a DOE response within 1 second */
static const char *step = "setup";

/* --- output ---------------------------------------------------------------------------- */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void hex(const uint8_t *p, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	putchar('"');
}

static void fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("{\"step\": \"%s\", \"ok\": false, \"error\": ", step);
	json_str(msg);
	printf("}\n");
	exit(1);
}

/* a step that passed; `fmt` continues the JSON object (", \"k\": v") */
static void passed(const char *fmt, ...)
{
	va_list ap;

	printf("{\"step\": \"%s\", \"ok\": true", step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("}\n");
	fflush(stdout);
}

/* --- config space and the DOE mailbox -------------------------------------------------- */

static uint32_t rd32(unsigned off)
{
	uint32_t v;

	if (pread(cfg, &v, 4, off) != 4)
		fail("reading config space at %#x: %s", off, strerror(errno));
	return v;
}

static void wr32(unsigned off, uint32_t v)
{
	if (pwrite(cfg, &v, 4, off) != 4)
		fail("writing config space at %#x: %s", off, strerror(errno));
}

static uint16_t rd16(unsigned off)
{
	uint16_t v;

	if (pread(cfg, &v, 2, off) != 2)
		fail("reading config space at %#x: %s", off, strerror(errno));
	return v;
}

static unsigned find_doe(void)
{
	unsigned off = 0x100;

	for (int i = 0; off && i < 64; i++) {
		uint32_t hdr = rd32(off);

		if ((hdr & 0xffff) == DOE_CAP_ID)
			return off;
		off = hdr >> 20;
	}
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Wait until `bit` is set (or, with `clear`, cleared) in the status register. */
static void wait_status(uint32_t bit, int clear, double start, const char *what)
{
	for (;;) {
		uint32_t st = rd32(doe + DOE_STATUS);

		if (st & DOE_STATUS_ERROR)
			fail("the DOE mailbox set its Error bit %s (status %#x)", what, st);
		if (clear ? !(st & bit) : !!(st & bit))
			return;
		if (now_ms() - start > timeout_ms)
			fail("no DOE response within %u ms %s (status %#x)", timeout_ms, what, st);
		usleep(1000);
	}
}

/* One DOE exchange: `len` bytes of `type` out, the response's payload into `rsp`. */
static size_t doe_exchange(uint8_t type, const uint8_t *req, size_t len, uint8_t *rsp,
			   size_t cap)
{
	uint32_t dw[MAX_DW];
	size_t n = 2 + (len + 3) / 4, got;
	double start = now_ms();

	if (n > MAX_DW)
		fail("a %zu-byte request is larger than this requester's mailbox buffer", len);
	memset(dw, 0, n * 4);
	dw[0] = 0x0001 | (uint32_t)type << 16;
	dw[1] = n;
	memcpy(&dw[2], req, len);
	/* a mailbox left busy, in error or holding an unread response (an earlier run that
	 * gave up) is aborted first, which empties it (PCIe r6.0 §6.30.2) */
	if (rd32(doe + DOE_STATUS) & (DOE_STATUS_BUSY | DOE_STATUS_ERROR | DOE_STATUS_READY)) {
		wr32(doe + DOE_CTRL, DOE_CTRL_ABORT);
		wait_status(DOE_STATUS_BUSY, 1, start, "after an abort");
	}
	for (size_t i = 0; i < n; i++)
		wr32(doe + DOE_WRITE, dw[i]);
	wr32(doe + DOE_CTRL, DOE_CTRL_GO);
	wait_status(DOE_STATUS_READY, 0, start, "to the request");
	/* QEMU answers inside the config write that sets Go: a slow responder shows here */
	if (now_ms() - start > timeout_ms)
		fail("no DOE response within %u ms (it took %.0f ms)", timeout_ms, now_ms() - start);
	for (got = 0; got < MAX_DW && (got < 2 || got < (dw[1] & 0x3ffff)); got++) {
		dw[got] = rd32(doe + DOE_READ);
		wr32(doe + DOE_READ, 0);
	}
	if ((dw[0] & 0xffff) != 0x0001 || ((dw[0] >> 16) & 0xff) != type)
		fail("a DOE response of vendor %#x type %u to a type %u request", dw[0] & 0xffff,
		     (dw[0] >> 16) & 0xff, type);
	if (got < 2 || (got - 2) * 4 > cap)
		fail("a DOE response of %zu dwords: too short or too long", got);
	memcpy(rsp, &dw[2], (got - 2) * 4);
	return (got - 2) * 4;
}

/* --- SPDM ------------------------------------------------------------------------------ */

static uint8_t vca[BUF], m1[4 * BUF];
static size_t vca_len, m1_len;
static int hash_nid, hash_len, sig_len;
static const EVP_MD *md;

static void append(uint8_t *t, size_t *tlen, size_t cap, const uint8_t *p, size_t n)
{
	if (*tlen + n > cap)
		fail("the transcript outgrew its buffer");
	memcpy(t + *tlen, p, n);
	*tlen += n;
}

static const char *error_name(uint8_t code)
{
	switch (code) {
	case 0x01: return "InvalidRequest";
	case 0x03: return "Busy";
	case 0x04: return "UnexpectedRequest";
	case 0x05: return "Unspecified";
	case 0x07: return "UnsupportedRequest";
	case 0x41: return "VersionMismatch";
	default: return "an error";
	}
}

/* An SPDM request and its response; the response must be `code` and at least `min` bytes. */
static size_t spdm(const uint8_t *req, size_t len, uint8_t *rsp, uint8_t code, size_t min)
{
	size_t n = doe_exchange(DOE_TYPE_CMA, req, len, rsp, BUF);

	if (n >= 4 && rsp[1] == 0x7f)
		fail("the device answered ERROR %s (%#04x, data %#04x)", error_name(rsp[2]),
		     rsp[2], rsp[3]);
	if (n < 4 || rsp[1] != code)
		fail("expected response code %#04x, got %#04x", code, n >= 2 ? rsp[1] : 0);
	if (n < min)
		fail("a %zu-byte response, shorter than the %zu bytes it must have (truncated)", n,
		     min);
	return n;
}

static void digest(const uint8_t *p, size_t n, uint8_t *out)
{
	unsigned len;

	if (!EVP_Digest(p, n, out, &len, md, NULL))
		fail("hashing failed");
}

static uint16_t le16(const uint8_t *p) { return p[0] | p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return le16(p) | (uint32_t)le16(p + 2) << 16; }

/* DSP0274 1.2 §15: ECDSA over "dmtf-spdm-v1.2.*"x4, zero pad, context, Hash(transcript). */
static int verify_sig(EVP_PKEY *key, const char *context, const uint8_t *t, size_t tlen,
		      const uint8_t *sig)
{
	uint8_t msg[100 + 64], th[64], der[160], *p = der;
	size_t clen = strlen(context), half = sig_len / 2;
	ECDSA_SIG *es = ECDSA_SIG_new();
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int derlen, ok;

	for (int i = 0; i < 4; i++)
		memcpy(msg + 16 * i, "dmtf-spdm-v1.2.*", 16);
	memset(msg + 64, 0, 36 - clen);
	memcpy(msg + 100 - clen, context, clen);
	digest(t, tlen, th);
	memcpy(msg + 100, th, hash_len);
	ECDSA_SIG_set0(es, BN_bin2bn(sig, half, NULL), BN_bin2bn(sig + half, half, NULL));
	derlen = i2d_ECDSA_SIG(es, &p);
	ok = derlen > 0 && EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1 &&
	     EVP_DigestVerify(ctx, der, derlen, msg, 100 + hash_len) == 1;
	EVP_MD_CTX_free(ctx);
	ECDSA_SIG_free(es);
	return ok;
}

int main(int argc, char **argv)
{
	uint8_t req[128], rsp[BUF], chain[BUF], want[64], nonce[NONCE];
	size_t n, chain_len = 0, total = 0;
	char path[256], expected[128], san[128] = "";
	X509 *certs[8], *root;
	int ncerts = 0;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: %s BDF ROOT.pem [TIMEOUT_MS]\n", argv[0]);
		return 2;
	}
	if (argc == 4)
		timeout_ms = strtoul(argv[3], NULL, 0);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", argv[1]);
	cfg = open(path, O_RDWR);
	if (cfg < 0)
		fail("%s: %s", path, strerror(errno));

	step = "discovery";
	doe = find_doe();
	if (!doe)
		fail("%s has no DOE extended capability (%#06x)", argv[1], DOE_CAP_ID);
	{
		char list[128] = "";
		int cma = 0;

		for (uint8_t index = 0, i = 0; i < 16; i++) {
			uint32_t q = index;

			n = doe_exchange(DOE_TYPE_DISCOVERY, (uint8_t *)&q, 4, rsp, sizeof(rsp));
			if (n < 4)
				fail("a %zu-byte discovery response", n);
			q = le32(rsp);
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%04x:%02x\"",
				 i ? ", " : "", q & 0xffff, (q >> 16) & 0xff);
			cma |= (q & 0xffff) == 1 && ((q >> 16) & 0xff) == DOE_TYPE_CMA;
			index = q >> 24;
			if (!index)
				break;
		}
		if (!cma)
			fail("the mailbox offers no CMA/SPDM protocol (0001:01): [%s]", list);
		passed(", \"offset\": \"%#x\", \"protocols\": [%s]", doe, list);
	}

	step = "version";
	memcpy(req, "\x10\x84\x00\x00", 4);
	n = spdm(req, 4, rsp, 0x04, 6);
	append(vca, &vca_len, sizeof(vca), req, 4);
	if (n < 6u + 2 * rsp[5])
		fail("VERSION lists %u entries in %zu bytes (truncated)", rsp[5], n);
	{
		int has12 = 0;

		for (int i = 0; i < rsp[5]; i++)
			has12 |= rsp[7 + 2 * i] == 0x12;
		append(vca, &vca_len, sizeof(vca), rsp, 6 + 2 * rsp[5]);
		if (!has12)
			fail("the device does not speak SPDM 1.2");
	}
	passed(", \"version\": \"1.2\"");

	step = "capabilities";
	memset(req, 0, 20);
	memcpy(req, "\x12\xe1\x00\x00", 4);
	req[13] = 0x10;  /* DataTransferSize 0x1000 */
	req[17] = 0x10;  /* MaxSPDMmsgSize 0x1000 */
	n = spdm(req, 20, rsp, 0x61, 20);
	append(vca, &vca_len, sizeof(vca), req, 20);
	append(vca, &vca_len, sizeof(vca), rsp, 20);
	{
		uint32_t flags = le32(rsp + 8);

		if (!(flags & (1 << 1)) || !(flags & (1 << 2)))
			fail("the device lacks CERT_CAP or CHAL_CAP (flags %#x)", flags);
		passed(", \"flags\": \"%#x\"", flags);
	}

	step = "algorithms";
	memset(req, 0, 32);
	memcpy(req, "\x12\xe3\x00\x00\x20\x00\x01\x00", 8);  /* Length 32, DMTF measurements */
	req[8] = 0x90;  /* BaseAsymAlgo: ECDSA P-256 (bit 4), P-384 (bit 7) */
	req[12] = 0x03; /* BaseHashAlgo: SHA-256, SHA-384 */
	n = spdm(req, 32, rsp, 0x63, 36);
	append(vca, &vca_len, sizeof(vca), req, 32);
	append(vca, &vca_len, sizeof(vca), rsp, 36);
	{
		uint32_t asym = le32(rsp + 12), hash = le32(rsp + 16);

		if (hash == 1)
			md = EVP_sha256(), hash_len = 32;
		else if (hash == 2)
			md = EVP_sha384(), hash_len = 48;
		else
			fail("the device chose hash %#x, not one offered", hash);
		if (asym == 0x10)
			sig_len = 64;
		else if (asym == 0x80)
			sig_len = 96;
		else
			fail("the device chose asymmetric algorithm %#x, not one offered", asym);
		hash_nid = EVP_MD_type(md);
		passed(", \"asym\": \"%s\", \"hash\": \"%s\"", sig_len == 64 ? "ECDSA P-256" :
		       "ECDSA P-384", OBJ_nid2sn(hash_nid));
	}

	step = "digests";
	memcpy(req, "\x12\x81\x00\x00", 4);
	n = spdm(req, 4, rsp, 0x01, 4);
	if (!(rsp[3] & 1))
		fail("slot 0 holds no certificate chain (slot mask %#x)", rsp[3]);
	if (n < 4u + hash_len)
		fail("DIGESTS carries %zu bytes, no whole digest (truncated)", n);
	memcpy(want, rsp + 4, hash_len);
	append(m1, &m1_len, sizeof(m1), req, 4);
	append(m1, &m1_len, sizeof(m1), rsp, 4 + hash_len * __builtin_popcount(rsp[3]));
	passed(", \"slot_mask\": \"%#x\", \"slot0\": \"%02x%02x%02x%02x...\"", rsp[3], want[0],
	       want[1], want[2], want[3]);

	step = "certificate";
	{
		int portions = 0;

		do {
			uint16_t portion, remainder;

			memcpy(req, "\x12\x82\x00\x00", 4);
			req[4] = chain_len & 0xff, req[5] = chain_len >> 8;
			req[6] = 0x00, req[7] = 0x02;  /* Length 0x200: a chain comes in portions */
			n = spdm(req, 8, rsp, 0x02, 8);
			portion = le16(rsp + 4), remainder = le16(rsp + 6);
			if (n < 8u + portion)
				fail("CERTIFICATE says %u bytes follow, %zu came (truncated)", portion,
				     n - 8);
			if (!portion || chain_len + portion > sizeof(chain) ||
			    (!portions && portion < 4))
				fail("a CERTIFICATE portion of %u bytes at offset %zu", portion,
				     chain_len);
			append(m1, &m1_len, sizeof(m1), req, 8);
			append(m1, &m1_len, sizeof(m1), rsp, 8 + portion);
			memcpy(chain + chain_len, rsp + 8, portion);
			chain_len += portion;
			if (!portions++)
				total = le16(chain);  /* the chain's own Length, in its first bytes */
			if (remainder && chain_len + remainder != total)
				fail("RemainderLength %u disagrees with the chain's Length %zu", remainder,
				     total);
			if (!remainder)
				break;
		} while (portions < 64);
		if (chain_len != total)
			fail("the chain's Length says %zu bytes, %zu came", total, chain_len);
		passed(", \"bytes\": %zu, \"portions\": %d", chain_len, portions);
	}

	step = "chain";
	{
		uint8_t h[64], root_hash[64];
		const uint8_t *p = chain + 4 + hash_len, *end = chain + chain_len;
		X509_STORE *store = X509_STORE_new();
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		STACK_OF(X509) *untrusted = sk_X509_new_null();
		FILE *f = fopen(argv[2], "r");
		int ok;

		digest(chain, chain_len, h);
		if (memcmp(h, want, hash_len))
			fail("the chain read does not hash to slot 0's digest in DIGESTS");
		while (p < end && ncerts < 8) {
			const uint8_t *at = p;

			certs[ncerts] = d2i_X509(NULL, &p, end - p);
			if (!certs[ncerts])
				fail("certificate %d of the chain (at byte %td) is not DER X.509", ncerts,
				     at - chain);
			ncerts++;
		}
		if (p != end || ncerts < 1)
			fail("the chain holds %d certificates and %td stray bytes", ncerts, end - p);
		{
			unsigned char *der = NULL;
			int len = i2d_X509(certs[0], &der);

			digest(der, len, root_hash);
			OPENSSL_free(der);
		}
		if (memcmp(root_hash, chain + 4, hash_len))
			fail("the chain's RootHash is not the hash of its first certificate");
		if (!f)
			fail("%s: %s", argv[2], strerror(errno));
		root = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		if (!root)
			fail("%s holds no PEM certificate", argv[2]);
		X509_STORE_add_cert(store, root);
		for (int i = 0; i < ncerts - 1; i++)
			sk_X509_push(untrusted, certs[i]);
		X509_STORE_CTX_init(ctx, store, certs[ncerts - 1], untrusted);
		ok = X509_verify_cert(ctx);
		if (ok != 1)
			fail("the leaf does not verify against the trusted root: %s (depth %d)",
			     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)),
			     X509_STORE_CTX_get_error_depth(ctx));
		{
			char subject[256];

			X509_NAME_oneline(X509_get_subject_name(certs[ncerts - 1]), subject,
					  sizeof(subject));
			printf("{\"step\": \"chain\", \"ok\": true, \"certificates\": %d, \"leaf\": ",
			       ncerts);
			json_str(subject);
			printf("}\n");
		}
	}

	step = "san";
	{
		GENERAL_NAMES *names = X509_get_ext_d2i(certs[ncerts - 1], NID_subject_alt_name,
							NULL, NULL);
		ASN1_OBJECT *cma = OBJ_txt2obj("2.23.147", 1);

		snprintf(expected, sizeof(expected),
			 "Vendor=%04x:Device=%04x:CC=%06x:REV=%02x:SSVID=%04x:SSID=%04x", rd16(0),
			 rd16(2), rd32(8) >> 8, rd32(8) & 0xff, rd16(0x2c), rd16(0x2e));
		if (!names)
			fail("the leaf has no SubjectAltName; this function needs %s", expected);
		for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
			GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
			ASN1_TYPE *v;

			if (g->type != GEN_OTHERNAME || OBJ_cmp(g->d.otherName->type_id, cma))
				continue;
			v = g->d.otherName->value;
			if (v->type == V_ASN1_UTF8STRING && v->value.utf8string->length < 127) {
				memcpy(san, v->value.utf8string->data, v->value.utf8string->length);
				san[v->value.utf8string->length] = 0;
			}
		}
		if (!*san)
			fail("the leaf's SubjectAltName has no CMA otherName (2.23.147); this "
			     "function needs %s", expected);
		if (strcasecmp(san, expected))
			fail("the leaf names %s, this function is %s", san, expected);
		printf("{\"step\": \"san\", \"ok\": true, \"san\": ");
		json_str(san);
		printf("}\n");
	}

	step = "challenge";
	{
		EVP_PKEY *key = X509_get0_pubkey(certs[ncerts - 1]);
		uint8_t h[64];
		size_t signed_len;
		uint8_t t[sizeof(vca) + sizeof(m1) + 64];
		size_t tlen = 0;

		if (getrandom(nonce, NONCE, 0) != NONCE)
			fail("getrandom: %s", strerror(errno));
		memcpy(req, "\x12\x83\x00\x00", 4);
		memcpy(req + 4, nonce, NONCE);
		n = spdm(req, 4 + NONCE, rsp, 0x03, 4 + hash_len + NONCE + 2);
		signed_len = 4 + hash_len + NONCE + 2 + le16(rsp + 4 + hash_len + NONCE);
		if (n < signed_len + sig_len)
			fail("CHALLENGE_AUTH of %zu bytes, short of its %zu (truncated)", n,
			     signed_len + sig_len);
		digest(chain, chain_len, h);
		if (memcmp(rsp + 4, h, hash_len))
			fail("CHALLENGE_AUTH's CertChainHash is not the chain's hash");
		append(t, &tlen, sizeof(t), vca, vca_len);
		append(t, &tlen, sizeof(t), m1, m1_len);
		append(t, &tlen, sizeof(t), req, 4 + NONCE);
		append(t, &tlen, sizeof(t), rsp, signed_len);
		if (!verify_sig(key, "responder-challenge_auth signing", t, tlen, rsp + signed_len))
			fail("CHALLENGE_AUTH's signature does not verify with the leaf's key");
		printf("{\"step\": \"challenge\", \"ok\": true, \"signature\": ");
		hex(rsp + signed_len, 8);
		printf("}\n");
	}

	step = "measurements";
	{
		EVP_PKEY *key = X509_get0_pubkey(certs[ncerts - 1]);
		uint8_t first[BUF];
		size_t first_len = 0;
		int blocks = 0;

		for (int round = 0; round < 2; round++) {
			uint8_t t[sizeof(vca) + 2 * BUF];
			size_t tlen = 0, rec, signed_len;

			if (getrandom(nonce, NONCE, 0) != NONCE)
				fail("getrandom: %s", strerror(errno));
			memcpy(req, "\x12\xe0\x01\xff", 4);  /* signed, every block */
			memcpy(req + 4, nonce, NONCE);
			req[4 + NONCE] = 0;  /* slot 0 */
			n = spdm(req, 5 + NONCE, rsp, 0x60, 8);
			rec = rsp[5] | rsp[6] << 8 | rsp[7] << 16;
			if (n < 8 + rec + NONCE + 2)
				fail("MEASUREMENTS of %zu bytes, short of its record (truncated)", n);
			signed_len = 8 + rec + NONCE + 2 + le16(rsp + 8 + rec + NONCE);
			if (n < signed_len + sig_len)
				fail("MEASUREMENTS of %zu bytes, short of its signature (truncated)", n);
			append(t, &tlen, sizeof(t), vca, vca_len);
			append(t, &tlen, sizeof(t), req, 5 + NONCE);
			append(t, &tlen, sizeof(t), rsp, signed_len);
			if (!verify_sig(key, "responder-measurements signing", t, tlen,
					rsp + signed_len))
				fail("MEASUREMENTS' signature does not verify with the leaf's key");
			if (round == 0) {
				blocks = rsp[4];
				memcpy(first, rsp + 8, rec);
				first_len = rec;
			} else if (rec != first_len || memcmp(first, rsp + 8, rec)) {
				fail("the measurements changed between two reads, with nothing reset "
				     "between them");
			}
		}
		printf("{\"step\": \"measurements\", \"ok\": true, \"blocks\": %d, \"record\": ",
		       blocks);
		hex(first, first_len < 48 ? first_len : 48);
		printf("}\n");
	}

	step = "done";
	passed(", \"authenticated\": true");
	return 0;
}
