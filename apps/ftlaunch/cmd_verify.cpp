// `ftlaunch verify CHECKPOINT_DIR`: checks a checkpoint folder against its manifest
// (io/manifest.h) by hand -- the same check a resume makes before it reads anything.
#include "commands.h"
#include "io/manifest.h"

namespace ftl::app {

int run_verify(const std::string& checkpoint_dir, const Log& log) {
    const io::VerifiedCheckpoint verified = io::verify_manifest(checkpoint_dir);
    log.info(checkpoint_dir + ": ok, " + std::to_string(verified.files) + " files, " + std::to_string(verified.bytes) +
             " bytes, sizes and CRC-32C as in manifest.json; identity " + verified.identity.dump());
    return 0;
}

}  // namespace ftl::app
