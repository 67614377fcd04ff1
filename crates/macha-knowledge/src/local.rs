//! The local sentence-embedding model (feature `embed-local`): a BERT model such as
//! all-MiniLM-L6-v2 loaded from files with candle and run on the CPU, no server needed.
//!
//! The directory holds `config.json`, `tokenizer.json` and `model.safetensors` (F32). A text
//! becomes a vector the way sentence-transformers makes it: WordPiece tokens (truncated at
//! [`MAX_TOKENS`], padded only to the longest text of the batch, not to the tokenizer file's fixed
//! length), the encoder's last hidden states averaged over the real tokens (the attention mask
//! weighs out the padding), then L2-normalised.

use crate::embed::{EmbedError, Embedder};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use std::sync::Mutex;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// Texts are cut after this many tokens (sentence-transformers' `max_seq_length` for the model).
pub const MAX_TOKENS: usize = 256;

/// A BERT sentence-embedding model loaded from a directory.
pub struct LocalEmbedder {
    model: BertModel,
    // The tokenizer is configured once; encoding needs only `&self`, the mutex keeps the type
    // `Sync` whatever the tokenizer's internals.
    tokenizer: Mutex<Tokenizer>,
    id: String,
    dimension: usize,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder").field("id", &self.id).field("dimension", &self.dimension).finish()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> EmbedError {
    EmbedError(format!("{what}: {e}"))
}

impl LocalEmbedder {
    /// Loads the model in `dir`; its id is `local:` and the directory's name.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbedError> {
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| err(&dir.join(name).display().to_string(), e));
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| err("config.json", e))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| err("model.safetensors", e))?;
        let model = BertModel::load(vb, &config).map_err(|e| err("loading the model", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| err("tokenizer.json", e))?;
        // The file pads every text to a fixed length; pad each batch to its longest text instead.
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| err("tokenizer truncation", e))?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".to_owned());
        let dimension = config.hidden_size;
        Ok(LocalEmbedder { model, tokenizer: Mutex::new(tokenizer), id: format!("local:{name}"), dimension })
    }

    fn run(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = {
            let tok = self.tokenizer.lock().map_err(|_| EmbedError("tokenizer lock poisoned".to_owned()))?;
            tok.encode_batch(texts.to_vec(), true).map_err(|e| err("tokenizing", e))?
        };
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let dev = &Device::Cpu;
        let t = |v: Vec<u32>| Tensor::from_vec(v, (rows, cols), dev).map_err(|e| err("tensor", e));
        let ids = t(ids)?;
        let mask = t(mask)?;
        let types = ids.zeros_like().map_err(|e| err("tensor", e))?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(|e| err("forward", e))?;
        pool(&hidden, &mask).map_err(|e| err("pooling", e))
    }
}

/// Mean over the real tokens (mask-weighted), then L2 normalisation: `[b, n, h]` to `b` vectors.
fn pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)?.to_vec2::<f32>()
}

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(texts)
    }
}
