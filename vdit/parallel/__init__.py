"""Devices and meshes: distributed initialisation, the mesh, logical-axis rules and activation constraints."""
