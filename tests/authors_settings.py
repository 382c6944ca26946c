"""The authors' mining settings, written out once for the tests (the method dataclasses have no defaults:
the pipeline's values live in params.yaml)."""

from rrm.settings import CRFParams, MiningParams

CRF = CRFParams(iterations=10, gauss_sxy=3.0, gauss_compat=3.0, bi_sxy=80.0, bi_srgb=13.0,
                bi_compat=10.0)  # AffinityNet's CRF, which RRM uses for eq. 5
MINING = MiningParams(rule="code", alpha_ratio=0.4, gamma=4.0, gamma_low=4.0, gamma_high=32.0, cam_min=0.1,
                      bg_confident=0.8, crf_confident=0.8, crf=CRF, crf_backend="pydensecrf")  # the authors' code

# RRM's tool/imutils.py crf_inference_inf, the post-processing CRF of infer_RRM.py (t=10).
INFERENCE_CRF = CRFParams(iterations=10, gauss_sxy=3.0, gauss_compat=3.0, bi_sxy=83.0, bi_srgb=5.0, bi_compat=4.0)
# RRM's train_from_cls_weight.py: argparse defaults and the constants of its loop, as the script runs them.
ONESTEP = {
    "batch_size": 4, "steps": 20000, "crop_size": 321, "scale_range": (0.7, 1.3),  # np.random.uniform(0.7, 1.3)
    "lr": 7e-4, "weight_decay": 1e-5, "poly_power": 0.9,  # PolyOptimizer_cls(momentum=0.9) is the poly power
    "momentum": 0.0,  # SGD(params, lr, weight_decay): 1e-5 lands in momentum, effectively none
    "freeze_bn": True, "dropout": True,
}
ENERGY = {"weight": 1e-7, "sigma_rgb": 15.0, "sigma_xy": 100.0, "scale": 0.5}  # --densecrfloss, --sigma-*, --rloss-scale
CAM_SCALES = (0.5, 1.0, 1.5, 2.0)  # SegNet.forward
