"""Triton kernels. Importing a kernel module needs Triton; the attention dispatch imports them lazily."""
