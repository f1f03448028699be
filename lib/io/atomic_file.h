// Whole-file writes that either land completely or not at all: the bytes go to a temporary file
// in the same folder, are fsynced, and are renamed over the target; the folder is fsynced after.
// A crash or an error at any point leaves the old file (if any) untouched.
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace ftl::io {

// Calls `write` with a stream on a temporary file next to `path`, then publishes it as `path`.
// Throws ftl::Error(kIo) naming `path` when the folder is missing or unwritable, or the stream
// fails; the temporary file is removed in that case.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// fsync a folder so that renames inside it survive a power loss.
void sync_directory(const std::string& dir);

}  // namespace ftl::io
