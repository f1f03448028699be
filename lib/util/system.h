// Facts of the running system that several modules stamp into what they write.
#pragma once

#include <string>

namespace ftl {

// Seconds since the Unix epoch, wall clock (for records read by people and other tools).
double unix_seconds();

// This machine's host name (gethostname), "localhost" if it cannot be read.
std::string host_name();

}  // namespace ftl
