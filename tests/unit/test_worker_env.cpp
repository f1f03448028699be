#include "catch.h"
#include "launch/worker_env.h"

#include <map>

using namespace ftl::launch;
using ftl::ErrorKind;

namespace {
EnvLookup fake_env(std::map<std::string, std::string> vars) {
    return [vars](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}
}  // namespace

TEST_CASE("a plain command line is not a worker", "[launch]") {
    CHECK_FALSE(detect_worker(fake_env({{"HOME", "/root"}, {"SLURM_PROCID", "0"}}), std::nullopt, std::nullopt));
}

TEST_CASE("ftlaunch's own workers read RANK and friends", "[launch]") {
    auto id = detect_worker(fake_env({{"FTLAUNCH_WORKER", "1"}, {"RANK", "5"}, {"LOCAL_RANK", "1"}, {"WORLD_SIZE", "8"},
                                      {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.1.1.1"}, {"MASTER_PORT", "29511"}}),
                            std::nullopt, std::nullopt);
    REQUIRE(id);
    CHECK(id->source == WorkerSource::kFtlaunch);
    CHECK(id->rank == 5);
    CHECK(id->local_rank == 1);
    CHECK(id->world_size == 8);
    CHECK(id->master_addr == "10.1.1.1");
    CHECK(id->master_port == 29511);
}

TEST_CASE("under mpirun the OMPI variables give the ranks", "[launch]") {
    auto id = detect_worker(fake_env({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}),
                            std::nullopt, 29600);
    REQUIRE(id);
    CHECK(id->source == WorkerSource::kMpirun);
    CHECK(id->rank == 1);
    CHECK(id->master_addr == "127.0.0.1");  // one machine
    CHECK(id->master_port == 29600);
    FTL_REQUIRE_ERROR(detect_worker(fake_env({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}),
                                    std::nullopt, std::nullopt),
                      ErrorKind::kConfig, "MASTER_ADDR", "main_process_ip");
}

TEST_CASE("inside an srun step the SLURM variables give the ranks and rank 0's host", "[launch]") {
    auto id = detect_worker(fake_env({{"SLURM_PROCID", "3"}, {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "4"},
                                      {"SLURM_LOCALID", "1"}, {"SLURM_STEP_NUM_NODES", "2"},
                                      {"SLURM_STEP_NODELIST", "gpu[07-08]"}}),
                            std::nullopt, std::nullopt);
    REQUIRE(id);
    CHECK(id->source == WorkerSource::kSrun);
    CHECK(id->rank == 3);
    CHECK(id->local_rank == 1);
    CHECK(id->local_world_size == 2);
    CHECK(id->master_addr == "gpu07");
    CHECK(id->master_port == 29500);
}

TEST_CASE("SLURM hostlists", "[launch]") {
    CHECK(first_slurm_host("node01") == "node01");
    CHECK(first_slurm_host("node[03-05,9],gpu7") == "node03");
    CHECK(first_slurm_host("a1,b2") == "a1");
    CHECK(first_slurm_host("rack[2]-n[10-12]") == "rack2-n[10-12]");
    FTL_REQUIRE_ERROR(first_slurm_host("node[01-02"), ErrorKind::kConfig, "unbalanced");
}

TEST_CASE("inconsistent worker environments are refused", "[launch][errors]") {
    FTL_REQUIRE_ERROR(detect_worker(fake_env({{"FTLAUNCH_WORKER", "1"}, {"RANK", "4"}, {"LOCAL_RANK", "0"},
                                              {"WORLD_SIZE", "4"}}),
                                    std::nullopt, std::nullopt),
                      ErrorKind::kConfig, "rank 4", "world size 4");
    FTL_REQUIRE_ERROR(detect_worker(fake_env({{"FTLAUNCH_WORKER", "1"}, {"RANK", "x"}}), std::nullopt, std::nullopt),
                      ErrorKind::kConfig, "RANK", "non-negative integer");
}
