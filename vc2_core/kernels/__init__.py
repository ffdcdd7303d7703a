"""Triton kernels. Importing a kernel module needs Triton (its ``*_limits`` module does not); the attention
registry imports kernels only when a call runs on one."""
