"""`lora-vl plan`: will a recipe fit a GPU? Peak memory measured as live tensor bytes of the
kit's real step on small-depth, full-width random models (no GPU, no download), extrapolated
over depth and batch; time from FLOPs. See `cli.py`."""
