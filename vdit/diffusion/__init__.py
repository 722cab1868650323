"""From noise to video: rectified flow, the ODE samplers, generation from a parameter tree, and the sampling modes built on frame conditioning."""
