// bind_alloc.cpp -- where the NumPy results of the ops come from (new_array, and
// _lepton_cpu.empty for the Python ops): small results are plain NumPy arrays;
// results of 1 MiB or more are 64-byte aligned blocks kept in a bounded cache when
// their array dies, and handed to the next result of the same size class.
//
// Why a cache: a training step allocates and frees the same few large activations
// and gradients every step. glibc hands such blocks back to the kernel (munmap, or
// trimming the heap top when several are freed together), so every step paid a page
// fault per 4 KiB and the kernel's zeroing of each page again: a CIFAR conv+ReLU
// forward and backward through autograd cost 2.5x its kernels. The cache keeps
// those pages mapped instead. It holds at most kMaxCachedBytes of free blocks (a
// block that would overflow it is freed at once), never a block over
// kMaxBlockBytes, and empty_cache() returns everything to the system.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "bind_common.h"

namespace lepton_bind {

namespace {

constexpr size_t kMaxCachedBytes = size_t(512) << 20;
constexpr size_t kMaxBlockBytes = size_t(256) << 20;
constexpr const char* kBlockCapsule = "lepton_kernels block";

// Sizes are rounded up to a class: a multiple of 1/8 of the size's power of two, so a
// class wastes at most 12.5% and results of one shape always share a class.
size_t size_class(size_t bytes) {
  size_t top = 1;
  while (top < bytes) top <<= 1;
  const size_t step = top >= 8 * 4096 ? top / 8 : 4096;
  return (bytes + step - 1) / step * step;
}

class BlockCache {
 public:
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    return std::aligned_alloc(static_cast<size_t>(kAlign), bytes);
  }

  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes <= kMaxBlockBytes && cached_ + bytes <= kMaxCachedBytes) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  void clear() {
    std::multimap<size_t, void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      cached_ = 0;
    }
    for (auto& kv : drop) std::free(kv.second);
  }

  std::pair<size_t, size_t> info() {
    std::lock_guard<std::mutex> lock(mu_);
    return {free_.size(), cached_};
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // size class -> free blocks
  size_t cached_ = 0;
};

// Never destroyed: arrays may die during interpreter shutdown, after static destructors.
BlockCache& cache() {
  static BlockCache* c = new BlockCache;
  return *c;
}

void release_block(PyObject* capsule) {
  void* p = PyCapsule_GetPointer(capsule, kBlockCapsule);
  const auto bytes = reinterpret_cast<uintptr_t>(PyCapsule_GetContext(capsule));
  if (p) cache().give(p, static_cast<size_t>(bytes));
}

}  // namespace

py::array new_array(const py::dtype& dtype, const std::vector<int64_t>& shape) {
  int64_t nbytes = dtype.itemsize();
  for (int64_t s : shape)
    if (s < 0 || __builtin_mul_overflow(nbytes, s, &nbytes) || nbytes > kInt64Max - kAlign)
      throw py::value_error("empty: the shape's byte count is negative or overflows int64");
  if (nbytes < kAlignFromBytes) return py::array(dtype, shape);
  const size_t bytes = size_class(static_cast<size_t>(nbytes));
  void* block = cache().take(bytes);
  if (block == nullptr) throw std::bad_alloc();
  PyObject* capsule = PyCapsule_New(block, kBlockCapsule, &release_block);
  if (capsule == nullptr || PyCapsule_SetContext(capsule, reinterpret_cast<void*>(bytes)) != 0) {
    Py_XDECREF(capsule);  // (its destructor has no size yet: free the block here)
    if (capsule == nullptr) std::free(block);
    throw py::error_already_set();
  }
  py::object owner = py::reinterpret_steal<py::object>(capsule);
  return py::array(dtype, shape, {}, block, owner);  // writeable; the block returns when the array dies
}

void register_alloc(py::module_& m) {
  m.def("empty", [](const py::tuple& shape, const py::dtype& dtype) {
          std::vector<int64_t> s;
          for (const py::handle& v : shape) s.push_back(v.cast<int64_t>());
          return new_array(dtype, s);
        },
        py::arg("shape"), py::arg("dtype"),
        "A new C-contiguous array; results of 1 MiB or more start on a 64-byte line and come from the "
        "block cache.");
  m.def("memory_cache_info", [] {
          auto [blocks, bytes] = cache().info();
          return py::make_tuple(blocks, bytes);
        },
        "(free blocks, bytes) the result cache holds now.");
  m.def("empty_memory_cache", [] { cache().clear(); },
        "Frees every cached block (the memory of live results is not touched).");
}

}  // namespace lepton_bind
