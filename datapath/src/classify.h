/* classify.h - rules (VLAN id, IPv4 destination, L4 protocol, destination
 * port) to tenant ids, by tuple-space search: one exact-match hash table per
 * combination of fields the rules use, probed from the most specific. */
#ifndef ISOLANE_CLASSIFY_H
#define ISOLANE_CLASSIFY_H

#include <stdint.h>

#include "isolane_dp.h"

struct classifier;

/* builds an immutable classifier; *err = -EINVAL / -EEXIST / -ENOMEM on NULL */
struct classifier *classifier_build(const struct dp_rule *rules, uint32_t n, int *err);
void classifier_free(struct classifier *c);

/* tenant id, -ENOENT when no rule matches, -EBADMSG when the headers are
 * truncated or inconsistent */
int classify(const struct classifier *c, const uint8_t *data, uint32_t len);

#endif
