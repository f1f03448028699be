#include "util/error.h"

namespace ftl {

int exit_code_for(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::kUsage:
        case ErrorKind::kConfig:
            return 2;
        default:
            return 1;
    }
}

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

}  // namespace ftl
