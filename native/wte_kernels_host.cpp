// Host (CPU) build of the CUDA kernels: the same source, compiled as C++ through cuda_shim.h and run
// by the fiber launcher in host_launch.cpp. Used by the logic tests only.
#include "wte_kernels.cu"
