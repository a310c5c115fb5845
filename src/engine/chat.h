/* engine/chat.h — engine/chat.c is public API: moe/chat.h
 * declares it. */
#ifndef MOE_ENGINE_CHAT_H
#define MOE_ENGINE_CHAT_H

#include "moe/chat.h"

#endif
