#include "io/hub.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::io {
namespace fs = std::filesystem;
namespace {

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

bool looks_like_commit(const std::string& s) {
    if (s.size() != 40) return false;
    for (char c : s)
        if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    return true;
}

}  // namespace

HubCache HubCache::from_environment() {
    if (auto v = env_or_empty("HF_HUB_CACHE"); !v.empty()) return {v};
    if (auto v = env_or_empty("HF_HOME"); !v.empty()) return {v + "/hub"};
    if (auto v = env_or_empty("XDG_CACHE_HOME"); !v.empty()) return {v + "/huggingface/hub"};
    return {env_or_empty("HOME") + "/.cache/huggingface/hub"};
}

std::string resolve_repo_dir(const std::string& name_or_path, const HubCache& cache, RepoType type,
                             const std::string& revision) {
    if (fs::is_directory(name_or_path)) return name_or_path;
    const bool is_model = type == RepoType::kModel;
    const std::string kind = is_model ? "model" : "dataset";
    const auto parts = split(name_or_path, '/');
    const bool repo_id = (parts.size() == 1 || parts.size() == 2) && !name_or_path.empty() &&
                         name_or_path[0] != '.' && name_or_path.find("//") == std::string::npos &&
                         !parts.back().empty();
    if (!repo_id)
        fail(ErrorKind::kConfig, kind + " '" + name_or_path +
                                     "': no such folder, and not a hub repo id (org/name)");
    std::string folder = (is_model ? "models--" : "datasets--") + join(parts, "--");
    const fs::path repo = fs::path(cache.dir) / folder;
    const std::string download = std::string("huggingface-cli download ") +
                                 (is_model ? "" : "--repo-type dataset ") + name_or_path +
                                 (revision == "main" ? "" : " --revision " + revision);
    const std::string hint = "; fetch it on a machine with internet access with `" + download +
                             "` (set HF_HUB_CACHE or HF_HOME to share the cache), or pass a local folder";

    std::string commit;
    if (looks_like_commit(revision) && fs::is_directory(repo / "snapshots" / revision)) {
        commit = revision;
    } else {
        const fs::path ref = repo / "refs" / revision;
        std::ifstream in(ref);
        if (!in)
            fail(ErrorKind::kConfig, kind + " '" + name_or_path + "' (revision " + revision +
                                         ") is not a local folder and not in the hub cache (no " +
                                         ref.string() + ")" + hint);
        std::getline(in, commit);
        commit = trim(commit);
    }
    const fs::path snapshot = repo / "snapshots" / commit;
    if (!fs::is_directory(snapshot))
        fail(ErrorKind::kConfig, kind + " '" + name_or_path + "': the hub cache names commit " + commit +
                                     " but " + snapshot.string() + " is missing" + hint);
    return snapshot.string();
}

}  // namespace ftl::io
