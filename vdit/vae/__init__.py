"""Video VAEs: `wan_vae` (Wan 2.1's causal 3D VAE) and its weight converter `convert_wan_vae`."""
