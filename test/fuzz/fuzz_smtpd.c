/* fuzz_smtpd.c: libFuzzer target for smtpd's parsers of untrusted input:
 * paths and ESMTP parameters of MAIL/RCPT, xtext, NOTIFY, ORCPT, base64
 * (AUTH) and the DATA end-of-message scanner.  The first byte picks the
 * parser; for the scanner the input is fed in chunks whose sizes come from
 * the input too, and the scanner must only ever end at CRLF.CRLF. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "../../smtpd/smtpd.h"

static void fuzz_path(const char *text)
{
	const char *p = text, *why = NULL;
	struct mail_addr addr;
	memset(&addr, 0, sizeof(addr));
	if (mail_addr_parse_path(&p, true, true, true, &addr, &why))
		mail_addr_free(&addr);
}

static void fuzz_params(const char *text)
{
	char *copy = mem_strdup(text);
	struct smtpd_param params[SMTPD_PARAMS_MAX];
	size_t count = 0;
	const char *why = NULL;
	smtpd_parse_params(copy, params, &count, &why);
	free(copy);
}

static void fuzz_values(const char *text, size_t len)
{
	struct buf out = BUF_INIT;
	smtpd_xtext_decode(text, &out);
	buf_reset(&out);
	smtpd_parse_notify(text, &out);
	buf_reset(&out);
	smtpd_parse_orcpt(text, &out);
	buf_reset(&out);
	smtpd_base64_decode(text, len, &out);
	buf_reset(&out);
	smtpd_log_safe(text, 64, &out);
	buf_free(&out);
}

/* Runs the scanner over data in chunks of 1..16 octets (sizes taken from
 * the data) or, with whole, in one piece; returns the result and leaves the
 * unstuffed text in out and the octets used in *used. */
static enum smtpd_scan_result scan(const uint8_t *data, size_t len, bool whole, struct buf *out, size_t *used)
{
	struct smtpd_scan scan;
	smtpd_scan_init(&scan);
	size_t pos = 0;
	enum smtpd_scan_result r = SMTPD_SCAN_MORE;
	while (pos < len) {
		size_t chunk = whole ? len - pos : 1 + data[pos] % 16;
		if (chunk > len - pos)
			chunk = len - pos;
		size_t consumed = 0;
		r = smtpd_scan_data(&scan, (const char *)data + pos, chunk, &consumed, out);
		if (consumed > chunk || (r == SMTPD_SCAN_MORE && consumed != chunk))
			abort();
		pos += consumed;
		if (r != SMTPD_SCAN_MORE)
			break;
	}
	*used = pos;
	return r;
}

/* The scanner must end only right after "\r\n.\r\n" (or a lone ".\r\n"
 * as the very first line), and what it makes of the data must not depend
 * on how the data was split into reads. */
static void fuzz_scanner(const uint8_t *data, size_t len)
{
	struct buf pieces = BUF_INIT, whole = BUF_INIT;
	size_t used_pieces, used_whole;
	enum smtpd_scan_result r = scan(data, len, false, &pieces, &used_pieces);
	enum smtpd_scan_result r_whole = scan(data, len, true, &whole, &used_whole);
	if (r != r_whole || used_pieces != used_whole || pieces.len != whole.len ||
	    (pieces.len && memcmp(pieces.data, whole.data, pieces.len) != 0))
		abort();
	if (r == SMTPD_SCAN_END) {
		size_t pos = used_pieces;
		bool at_start = pos == 3;
		if (pos < 3 || memcmp(data + pos - 3, ".\r\n", 3) != 0 ||
		    (!at_start && (pos < 5 || memcmp(data + pos - 5, "\r\n", 2) != 0)))
			abort();
	}
	buf_free(&pieces);
	buf_free(&whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 4;
	data++;
	size--;
	if (which == 3) {
		fuzz_scanner(data, size);
		return 0;
	}
	char *text = mem_strndup((const char *)data, size);
	if (which == 0)
		fuzz_path(text);
	else if (which == 1)
		fuzz_params(text);
	else
		fuzz_values(text, strlen(text));
	free(text);
	return 0;
}
