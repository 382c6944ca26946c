"""The paper's method: CAM (eq. 1-2), reliable regions (eq. 3-5), dense CRF, energy loss (eq. 6-8), losses."""
