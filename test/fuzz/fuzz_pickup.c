/* fuzz_pickup.c: libFuzzer target for pickup's parsers of untrusted
 * files: the x-sender / x-receiver envelope, then the message's
 * normalisation.  The first byte chooses pickup-remove-dot.  Whatever the
 * input, a normalised message must hold no NUL and no bare CR or LF. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "../../pickup/pickup.h"

static void check_line_ends(const struct buf *out)
{
	for (size_t i = 0; i < out->len; i++) {
		char c = out->data[i];
		if (c == '\0' || (c == '\r' && (i + 1 >= out->len || out->data[i + 1] != '\n')) ||
		    (c == '\n' && (i == 0 || out->data[i - 1] != '\r')))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool remove_dot = data[0] & 1;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	struct pickup_envelope env;
	struct buf why = BUF_INIT, out = BUF_INIT;
	if (pickup_parse_envelope(text, len, "fuzz.test", &env, &why)) {
		if (env.message_offset > len || env.nrcpts == 0 || env.sender == NULL)
			abort();
		if (pickup_normalize_message(text + env.message_offset, len - env.message_offset, remove_dot, &out,
		                             &why))
			check_line_ends(&out);
	}
	pickup_envelope_free(&env);
	buf_free(&why);
	buf_free(&out);
	return 0;
}
