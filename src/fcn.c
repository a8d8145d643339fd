/* fcn.c — FCN-32s/16s/8s (Long et al. 2015).  Not built yet: issue 7. */
#include "model.h"

void unet__build_fcn(struct unet__builder *B) {
    /* Without nodes the model is rejected by unet__model_build. */
    (void)B;
}

void unet__init_fcn(unet_model *m, struct unet__rng *rng) {
    (void)m;
    (void)rng;
}
