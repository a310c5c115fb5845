/* engine/chat_template.h — engine/chat_template.c is public API: moe/chat_template.h
 * declares it. */
#ifndef MOE_ENGINE_CHAT_TEMPLATE_H
#define MOE_ENGINE_CHAT_TEMPLATE_H

#include "moe/chat_template.h"

#endif
