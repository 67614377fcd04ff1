//! The embedding model of hybrid search, chosen by `knowledge.embedder` (decision 0017): none,
//! the local model (feature `embed-local`, `macha_knowledge::local`), or the configured Ollama or
//! OpenAI-compatible server through the agent's HTTP backends, adapted here to
//! [`macha_knowledge::embed::Embedder`] (the knowledge crate never depends on the agent crate).

use crate::config::{Config, EmbedderConfig};
use macha_agent::backend::ollama::OllamaBackend;
use macha_agent::backend::openai::OpenAiBackend;
use macha_agent::backend::{Backend, Timeouts};
use macha_knowledge::embed::{EmbedError, Embedder};
use std::future::Future;
use std::sync::Arc;

/// A remote embedding model: the server's `/api/embed` or `/v1/embeddings`.
pub struct RemoteEmbedder {
    backend: Arc<dyn Backend>,
    model: String,
    id: String,
    dimension: usize,
}

impl std::fmt::Debug for RemoteEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEmbedder").field("id", &self.id).field("dimension", &self.dimension).finish()
    }
}

/// Runs a future to completion from synchronous code: on the daemon's multi-threaded runtime
/// without blocking its other tasks' threads, or on a small runtime of its own in the CLI.
fn block_on<F: Future>(f: F) -> Result<F::Output, EmbedError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| h.block_on(f)))
        }
        Ok(_) => Err(EmbedError("a remote embedder cannot wait on a single-threaded runtime".to_owned())),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| EmbedError(format!("starting a runtime: {e}")))?;
            Ok(rt.block_on(f))
        }
    }
}

impl RemoteEmbedder {
    /// Connects to the model: one probe text tells the dimension. `kind` is `ollama` or `openai`.
    pub fn connect(backend: Arc<dyn Backend>, kind: &str, model: &str) -> Result<RemoteEmbedder, EmbedError> {
        let probe = block_on(backend.embed(model, &["dimension probe".to_owned()]))?
            .map_err(|e| EmbedError(format!("{kind} model {model}: {e}")))?;
        let dimension = probe.first().map_or(0, Vec::len);
        if dimension == 0 {
            return Err(EmbedError(format!("{kind} model {model} returned an empty vector")));
        }
        Ok(RemoteEmbedder { backend, model: model.to_owned(), id: format!("{kind}:{model}"), dimension })
    }
}

impl Embedder for RemoteEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        block_on(self.backend.embed(&self.model, texts))?.map_err(|e| EmbedError(e.to_string()))
    }
}

/// An embedder that the daemon shares between its BATCH job and the searches it answers.
pub type SharedEmbedder = dyn Embedder + Send + Sync;

/// The configured embedder, or `None` for keyword-only search.
pub fn from_config(config: &Config) -> anyhow::Result<Option<Box<SharedEmbedder>>> {
    let t = Timeouts::from_request(config.llm.timeout);
    Ok(match &config.knowledge_embedder {
        EmbedderConfig::None => None,
        EmbedderConfig::Local { model_dir } => Some(local(model_dir)?),
        EmbedderConfig::Ollama { model } => {
            let backend: Arc<dyn Backend> = Arc::new(OllamaBackend::new(&config.llm.url, t)?);
            Some(Box::new(RemoteEmbedder::connect(backend, "ollama", model)?))
        }
        EmbedderConfig::Openai { model } => {
            let key = match &config.llm.api_key_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::format_err!("llm.api_key_file {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let backend: Arc<dyn Backend> = Arc::new(OpenAiBackend::new(&config.llm.url, key, t)?);
            Some(Box::new(RemoteEmbedder::connect(backend, "openai", model)?))
        }
    })
}

#[cfg(feature = "embed-local")]
fn local(dir: &std::path::Path) -> anyhow::Result<Box<SharedEmbedder>> {
    Ok(Box::new(macha_knowledge::local::LocalEmbedder::load(dir)?))
}

#[cfg(not(feature = "embed-local"))]
fn local(_dir: &std::path::Path) -> anyhow::Result<Box<SharedEmbedder>> {
    anyhow::bail!("knowledge.embedder = \"local\": this build has no local model (build with the embed-local feature)")
}

/// The configured embedder for a search: on failure a warning, and keyword-only search.
pub fn for_search(config: &Config) -> Option<Box<SharedEmbedder>> {
    match from_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("macha: the embedding model is unavailable ({e:#}); searching by keyword only");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;
    use macha_agent::backend::BackendError;
    use macha_agent::message::GenOptions;
    use macha_agent::{ChatRequest, ChatResponse};

    /// A server that embeds every text as its length and a constant.
    #[derive(Debug)]
    struct Lengths;

    impl Backend for Lengths {
        fn describe(&self) -> String {
            "lengths".into()
        }
        fn chat<'a>(
            &'a self,
            _req: &'a ChatRequest,
            _sink: Option<macha_agent::backend::TokenSink>,
        ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
            Box::pin(async { Err(BackendError::Config("no chat".into())) })
        }
        fn generate<'a>(
            &'a self,
            _model: &'a str,
            _system: &'a str,
            _prompt: &'a str,
            _options: &'a GenOptions,
        ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
            Box::pin(async { Err(BackendError::Config("no generate".into())) })
        }
        fn embed<'a>(
            &'a self,
            model: &'a str,
            input: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>> {
            Box::pin(async move {
                if model != "m" {
                    return Err(BackendError::Server(format!("model {model} not found")));
                }
                Ok(input.iter().map(|t| vec![t.len() as f32, 1.0, 0.0]).collect())
            })
        }
        fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
            Box::pin(async { Ok(vec!["m".into()]) })
        }
    }

    #[test]
    fn the_remote_embedder_probes_its_dimension_and_names_its_model() {
        let e = RemoteEmbedder::connect(Arc::new(Lengths), "ollama", "m").unwrap();
        assert_eq!((e.model_id(), e.dimension()), ("ollama:m", 3));
        assert_eq!(e.embed(&["abcd".into()]).unwrap(), vec![vec![4.0, 1.0, 0.0]]);
        let missing = RemoteEmbedder::connect(Arc::new(Lengths), "openai", "other").unwrap_err();
        assert!(missing.0.contains("other"), "{missing}");
    }

    #[test]
    fn no_embedder_is_keyword_only() {
        let (_, config) = Config::parse("", crate::config::Scope::User).unwrap();
        assert!(from_config(&config).unwrap().is_none());
        let (_, local) = Config::parse(
            "[knowledge]\nembedder = \"local\"\nmodel_dir = \"/nonexistent\"\n",
            crate::config::Scope::User,
        )
        .unwrap();
        assert!(from_config(&local).is_err(), "a missing model is an error, not keyword-only in disguise");
        assert!(Config::parse("[knowledge]\nembedder = \"ollama\"\n", crate::config::Scope::User).is_err());
        assert!(Config::parse("[knowledge]\nembedder = \"magic\"\n", crate::config::Scope::User).is_err());
    }
}
