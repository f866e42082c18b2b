/* gen_ipc_corpus.c: writes the seed corpus of fuzz_ipc (a few small valid
 * frames) into the directory given as argument.  Run once by hand:
 *   cc -I../../common gen_ipc_corpus.c ../../common/{ipc,buf,mem,log}.c -o gen && ./gen corpus/ipc */
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "ipc.h"
#include "log.h"

static void save(const char *dir, const char *name, const struct buf *b)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len || fclose(f) != 0)
		log_fatal("cannot write %s", path);
}

static void end(struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_fatal("%s", buf_cstr(&err));
	buf_free(&err);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		log_fatal("usage: gen_ipc_corpus DIR");
	struct buf b = BUF_INIT;
	struct ipc_writer w;

	ipc_write_begin(&w, &b, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, "4Fx2k9");
	ipc_put_str(&w, IPC_ATTR_SENDER, "a@example.org");
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, "b@example.com");
	ipc_put_int(&w, IPC_ATTR_SIZE, 1234);
	ipc_put_int(&w, IPC_ATTR_SMTPUTF8, 1);
	end(&w);
	save(argv[1], "enqueue", &b);

	/* Two frames in one stream, the second carrying body data. */
	ipc_write_begin(&w, &b, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "data");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, "4Fx2k9");
	ipc_put_str(&w, IPC_ATTR_SENDER, "");
	ipc_put_data(&w, IPC_ATTR_DATA, "Subject: x\r\n\r\nhi\r\n", 19);
	ipc_put_int(&w, IPC_ATTR_SEQ, 2);
	end(&w);
	save(argv[1], "enqueue-data", &b);

	buf_reset(&b);
	ipc_write_begin(&w, &b, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "result");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, 77);
	ipc_put_int(&w, IPC_ATTR_STATUS, 250);
	ipc_put_str(&w, IPC_ATTR_DSN_STATUS, "2.0.0");
	ipc_put_str(&w, IPC_ATTR_TLS_PROTOCOL, "TLSv1.3");
	ipc_put_str(&w, IPC_ATTR_TLS_CIPHER, "TLS_AES_256_GCM_SHA384");
	end(&w);
	save(argv[1], "result", &b);
	buf_free(&b);
	return 0;
}
