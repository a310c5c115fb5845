/* backend/device_layer.h — the public expert layer (moe/switchglu.h) placed
 * on a GPU: its weights are a moe_bk_experts of that device's backend, the
 * same object a model on the GPU runs, and host inputs are staged in device
 * buffers the layer keeps.
 *
 * layers/switchglu.c makes the choice at creation and hands each call of a
 * layer whose config names a GPU to the functions below, after the checks
 * both devices share (formats, expert numbers, routings): this is the one
 * place a layer reaches up to a backend, so that the public layer API stays
 * one API for both devices. */
#ifndef MOE_BACKEND_DEVICE_LAYER_H
#define MOE_BACKEND_DEVICE_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "moe/switchglu.h"

typedef struct moe_device_layer moe_device_layer;

/* A layer of cfg's shape and these formats on the first GPU (the CUDA
 * backend); MOE_ERR_UNSUPPORTED, saying why, where there is none. */
moe_status moe_device_layer_create(const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                   const moe_expert_weights *up, const moe_expert_weights *down,
                                   moe_device_layer **out);
/* The same over backend b, which the layer takes over (destroyed with it,
 * or at once on failure): how the tests run this file's staging over the
 * CPU backend, where no GPU is. */
moe_status moe_device_layer_create_on(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                      const moe_expert_weights *up, const moe_expert_weights *down,
                                      moe_device_layer **out);
moe_status moe_device_layer_load(moe_device_layer *d, int expert, const moe_expert_weights *gate,
                                 const moe_expert_weights *up, const moe_expert_weights *down);
moe_status moe_device_layer_set_fused(moe_device_layer *d, int fused);
size_t moe_device_layer_bytes(const moe_device_layer *d);
void moe_device_layer_free(moe_device_layer *d);

/* A call in steps, arguments already checked (moe_switchglu_check_call),
 * pointers the host's:
 *   stage   copies x [tokens, dim] and `routings` routings (indices and
 *           scores [routings, tokens, top_k]) to the device;
 *   run     queues one forward of the staged x on routing q;
 *   sync    waits for everything queued;
 *   fetch   waits, and copies the last forward's y back (a fault the
 *           device found, such as an expert index outside the layer, is
 *           reported here). */
moe_status moe_device_layer_stage(moe_device_layer *d, const float *x, int tokens, const int32_t *idx,
                                  const float *scores, int top_k, int routings);
moe_status moe_device_layer_run(moe_device_layer *d, int q);
moe_status moe_device_layer_sync(moe_device_layer *d);
moe_status moe_device_layer_fetch(moe_device_layer *d, float *y);

/* stage, run and fetch: moe_switchglu_forward on the device. */
moe_status moe_device_layer_forward(moe_device_layer *d, const float *x, int tokens, const int32_t *idx,
                                    const float *scores, int top_k, float *y);

#endif
