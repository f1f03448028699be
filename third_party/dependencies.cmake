# External packages, all from the system (Debian 12 or the GPU image) or the torch wheel.
# No third-party source is copied into this repository.

find_package(yaml-cpp REQUIRED)
if(TARGET yaml-cpp::yaml-cpp)
  set(FTL_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(FTL_YAML_TARGET yaml-cpp)   # yaml-cpp 0.7 (Debian 12) exports the bare name
endif()
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Threads REQUIRED)

# LibTorch comes from the torch Python wheel: scripts/build.sh passes
# -DCMAKE_PREFIX_PATH=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)').
# The arch list is named so that TorchConfig skips probing for a GPU (which fails on CPU
# machines); Hopper (H100/H200) is the target.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")
endif()
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
find_package(Torch REQUIRED)
if(TARGET torch_cuda OR "${TORCH_LIBRARIES}" MATCHES "cuda")
  set(FTL_TORCH_HAS_CUDA ON)
else()
  set(FTL_TORCH_HAS_CUDA OFF)
endif()
# The torch wheel's directory, for c10d headers and an rpath to its shared libraries.
get_filename_component(FTL_TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)

# Catch2: v2 on Debian 12 (single header), v3 on the GPU image. tests/catch.h hides the difference.
find_package(Catch2 QUIET)
if(Catch2_FOUND)
  string(REGEX MATCH "^[0-9]+" FTL_CATCH2_MAJOR "${Catch2_VERSION}")
else()
  set(FTL_CATCH2_MAJOR 0)
endif()

# LibTorch's ABI flag (-D_GLIBCXX_USE_CXX11_ABI=...) must be the same in every target that
# shares std::string with it, so it applies to the whole project.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# NCCL headers for c10d::ProcessGroupNCCL: the nvidia-nccl wheel next to torch, or the toolkit's.
if(FTL_TORCH_HAS_CUDA)
  find_path(FTL_NCCL_INCLUDE_DIR nccl.h
    HINTS ${FTL_TORCH_LIB_DIR}/../../nvidia/nccl/include /usr/local/cuda/include /usr/include)
  if(NOT FTL_NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "LibTorch has CUDA but nccl.h was not found; install NCCL headers")
  endif()
endif()

# The Python that holds the parity-test references (the setup venv); scripts/build.sh sets it.
set(FTL_PYTHON "python3" CACHE FILEPATH "Python interpreter with transformers/peft/accelerate for parity tests")

# libtorch.so exports its own statically linked copy of std::filesystem; an executable that lists
# libtorch before libstdc++ binds its std::filesystem calls to that copy, whose remove_all crashes.
# Naming libstdc++ first on every executable's link line puts it first in the lookup order.
set(CMAKE_EXE_LINKER_FLAGS "${CMAKE_EXE_LINKER_FLAGS} -Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state")

# Arrow and Parquet C++ for datasets, from the pyarrow wheel next to the parity references (the
# wheel ships headers and versioned libraries). Optional: without them, parquet/arrow dataset
# files are an error that says how to convert them.
execute_process(COMMAND ${FTL_PYTHON} -c
  "import pyarrow, os; d = os.path.dirname(pyarrow.__file__); print(pyarrow.get_include()); print(d)"
  OUTPUT_VARIABLE FTL_PYARROW_PATHS OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE FTL_PYARROW_RC)
set(FTL_HAVE_ARROW OFF)
if(FTL_PYARROW_RC EQUAL 0 AND FTL_PYARROW_PATHS)
  string(REPLACE "\n" ";" FTL_PYARROW_PATHS "${FTL_PYARROW_PATHS}")
  list(GET FTL_PYARROW_PATHS 0 FTL_ARROW_INCLUDE_DIR)
  list(GET FTL_PYARROW_PATHS 1 FTL_ARROW_LIB_DIR)
  file(GLOB FTL_ARROW_LIB "${FTL_ARROW_LIB_DIR}/libarrow.so.[0-9]*")
  file(GLOB FTL_PARQUET_LIB "${FTL_ARROW_LIB_DIR}/libparquet.so.[0-9]*")
  if(FTL_ARROW_LIB AND FTL_PARQUET_LIB AND EXISTS "${FTL_ARROW_INCLUDE_DIR}/parquet/arrow/reader.h")
    list(GET FTL_ARROW_LIB 0 FTL_ARROW_LIB)
    list(GET FTL_PARQUET_LIB 0 FTL_PARQUET_LIB)
    set(FTL_HAVE_ARROW ON)
  endif()
endif()
message(STATUS "ftlaunch: Arrow/Parquet from pyarrow: ${FTL_HAVE_ARROW} ${FTL_ARROW_LIB_DIR}")

# Where executables find LibTorch's and (when used) Arrow's shared libraries, without LD_LIBRARY_PATH.
set(FTL_RPATH "${FTL_TORCH_LIB_DIR}")
if(FTL_HAVE_ARROW)
  list(APPEND FTL_RPATH "${FTL_ARROW_LIB_DIR}")
endif()
