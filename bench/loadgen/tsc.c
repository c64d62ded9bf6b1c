/* tsc.c - the datapath's TSC calibration (datapath/src/tsc.c), compiled
 * into this module too: the generator stamps t_send with the same clock,
 * calibrated the same way. Included, not copied. */
#include "../../datapath/src/tsc.c"
