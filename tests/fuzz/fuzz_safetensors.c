/* tests/fuzz/fuzz_safetensors.c — a safetensors file: the 8-byte length,
 * the JSON header and the tensor table checked against the file (see
 * io/safetensors.h). The input is the whole file, handed to the reader
 * through a memory file so that it maps it as it maps a checkpoint. What
 * opens must describe bytes inside the file, in a table the lookups agree
 * with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    moe_st_file *f = NULL;
    if (done == size && moe_st_open(path, &f) == MOE_OK) {
        uint64_t total = 0;
        for (int i = 0; i < moe_st_count(f); i++) {
            const moe_st_tensor *t = moe_st_at(f, i);
            fuzz_check(t && t->name && t->dtype_name, "a listed tensor has a name and a dtype");
            fuzz_check(moe_st_find(f, t->name) == t, "find gives the tensor listed under its name");
            fuzz_check(t->ndim >= 0 && t->ndim <= MOE_ST_MAX_DIMS, "dimensions within bounds");
            if (t->dtype != MOE_DTYPE_COUNT) {
                uint64_t n = 1;
                for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
                fuzz_check(n * moe_dtype_size(t->dtype) == t->nbytes, "bytes agree with the shape");
            }
            total += t->nbytes;
            fuzz_check(total <= size, "the tensors fit in the file");
            if (t->nbytes) {
                /* the first and last byte are inside the mapping */
                volatile unsigned char sum = ((const unsigned char *)t->data)[0];
                sum ^= ((const unsigned char *)t->data)[t->nbytes - 1];
                (void)sum;
            }
        }
        fuzz_check(moe_st_at(f, moe_st_count(f)) == NULL, "no tensor past the count");
        moe_st_metadata(f, "format");
        moe_st_close(f);
    }
    close(fd);
    return 0;
}
