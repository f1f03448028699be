#include "train/inputs.h"

#include "data/dataset.h"
#include "io/hub.h"

namespace ftl::train {

JobInputs resolve_job_inputs(const config::TrainArgs& args) {
    const io::HubCache hub = io::HubCache::from_environment();
    const std::string model_dir =
        io::resolve_repo_dir(args.model_name_or_path, hub, io::RepoType::kModel, args.model_revision);
    const std::string dataset_dir = io::resolve_repo_dir(args.dataset_name, hub, io::RepoType::kDataset);
    std::optional<tokenizer::ChatFormat> chat_format;
    if (args.chat_template_format != "none")
        chat_format = tokenizer::parse_chat_format(args.chat_template_format, "--chat_template_format");
    auto tok = tokenizer::HfTokenizer::load(
        model_dir, chat_format ? tokenizer::chat_special_tokens(*chat_format) : tokenizer::SpecialTokenOverrides{});
    if (!chat_format) tok.set_pad_to_eos();
    return {model_dir, dataset_dir, chat_format, std::move(tok)};
}

JobModel load_job_model(const JobInputs& inputs, const at::Device& device) {
    model::LoadOptions load;
    load.dtype = at::kFloat;
    load.device = device;
    JobModel out{model::load_causal_lm(inputs.model_dir, load), std::nullopt};
    if (inputs.chat_format && inputs.tokenizer.size() > out.loaded.model.config().vocab_size)
        out.resized_to = out.loaded.model.resize_token_embeddings(inputs.tokenizer.size(), 8);
    return out;
}

std::vector<data::Row> split_rows(const config::TrainArgs& args, const JobInputs& inputs, const std::string& split) {
    data::TextOptions text{args.dataset_text_field, inputs.chat_format, args.add_special_tokens,
                           args.append_concat_token};
    const std::string source = args.dataset_name + " [" + split + "]";
    auto examples = data::tokenize_records(data::read_split(inputs.dataset_dir, split), inputs.tokenizer, text, source);
    return args.packing ? data::pack_examples(examples, args.max_seq_length)
                        : data::unpacked_rows(examples, args.max_seq_length, source);
}

}  // namespace ftl::train
