// Where a `--model_name_or_path` lives: a local folder, or `org/name` in the HF hub cache
// (huggingface_hub's layout: <cache>/models--org--name/refs/<revision> holds a commit hash,
// <cache>/models--org--name/snapshots/<commit>/ holds the files). Nothing is downloaded: the
// machines that train are often offline, so a miss is an error that says how to fetch the files.
#pragma once

#include <optional>
#include <string>

namespace ftl::io {

enum class RepoType { kModel, kDataset };

// The cache folder, as huggingface_hub picks it: $HF_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
struct HubCache {
    std::string dir;
    static HubCache from_environment();
};

// Returns the folder holding the repo's files at `revision` (a branch/tag name under refs/, or a
// commit hash with a snapshot). `name_or_path` that is an existing folder is returned as is.
// Throws ftl::Error(kConfig) naming what was looked for and the download command when not found.
std::string resolve_repo_dir(const std::string& name_or_path, const HubCache& cache,
                             RepoType type = RepoType::kModel,
                             const std::string& revision = "main");

}  // namespace ftl::io
