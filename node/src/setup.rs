//! The `setup` wizard of spec §7: asks for what the flags did not give, writes the TOML.

use crate::cli::SetupArgs;
use crate::config::{LocalLlmSection, NodeConfig};
use std::io::{BufRead, Write};

/// Asks a question on `output` and reads one line from `input`; empty means `default`.
fn ask(
    input: &mut impl BufRead,
    output: &mut impl Write,
    question: &str,
    default: Option<&str>,
) -> std::io::Result<String> {
    match default {
        Some(default) => write!(output, "{question} [{default}]: ")?,
        None => write!(output, "{question}: ")?,
    }
    output.flush()?;
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 && default.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no answer to `{question}`"),
        ));
    }
    let answer = line.trim();
    Ok(if answer.is_empty() {
        default.unwrap_or_default().to_owned()
    } else {
        answer.to_owned()
    })
}

/// Builds the config from flags and answers. Returns the TOML text.
pub fn wizard(
    args: &SetupArgs,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> anyhow::Result<String> {
    let mut config = NodeConfig::default();
    config.server.url = match &args.server_url {
        Some(url) => url.clone(),
        None => ask(
            input,
            output,
            "Enter Queue Server URL",
            Some("http://localhost:8000"),
        )?,
    };
    let key = match &args.api_key {
        Some(key) => key.clone(),
        None => ask(input, output, "Enter Node API Key", None)?,
    };
    config.server.api_key = Some(key).filter(|k| !k.is_empty());
    let local = match (args.local_llm_port, &args.model) {
        (Some(_), _) => true,
        (None, Some(_)) => false,
        (None, None) => loop {
            let answer = ask(
                input,
                output,
                "Are you using a local LLM server? (y/n)",
                Some("y"),
            )?;
            match answer.to_ascii_lowercase().as_str() {
                "y" | "yes" => break true,
                "n" | "no" => break false,
                _ => writeln!(output, "Please answer y or n.")?,
            }
        },
    };
    if local {
        let port = match args.local_llm_port {
            Some(port) => port,
            None => loop {
                let answer = ask(
                    input,
                    output,
                    "Which port? (Ollama 11434, LM Studio 1234, llama.cpp 8080, vLLM 8000)",
                    Some("11434"),
                )?;
                match answer.parse::<u16>() {
                    Ok(port) if port > 0 => break port,
                    _ => writeln!(output, "Please enter a port number.")?,
                }
            },
        };
        config.local_llm = LocalLlmSection {
            enabled: true,
            port: Some(port),
            ..LocalLlmSection::default()
        };
    } else {
        let model = match &args.model {
            Some(model) => model.clone(),
            None => ask(
                input,
                output,
                "Enter model name (e.g. openai/gpt-4o-mini)",
                None,
            )?,
        };
        config.llm.model = Some(model);
    }
    // Round-trip through the loader's validation so the wizard never writes a bad file.
    let text = toml::to_string_pretty(&config)?;
    let parsed: NodeConfig = toml::from_str(&text)?;
    if !parsed.server.url.starts_with("http://") && !parsed.server.url.starts_with("https://") {
        anyhow::bail!(
            "the server URL must start with http:// or https://, not `{}`",
            parsed.server.url
        );
    }
    Ok(format!(
        "# Written by `obb-node setup`. Keys of hosted APIs are better set in the environment\n# (OPENAI_API_KEY, GROQ_API_KEY, …) than here.\n{text}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &SetupArgs, answers: &str) -> (anyhow::Result<String>, String) {
        let mut output = Vec::new();
        let result = wizard(args, &mut answers.as_bytes(), &mut output);
        (result, String::from_utf8(output).unwrap())
    }

    #[test]
    fn the_prompts_follow_the_spec_and_defaults_apply() {
        let (text, prompts) = run(&SetupArgs::default(), "\nsk-obb-node\nmaybe\ny\n\n");
        let config: NodeConfig = toml::from_str(&text.unwrap()).unwrap();
        assert!(prompts.contains("Enter Queue Server URL"));
        assert!(prompts.contains("Please answer y or n."));
        assert_eq!(config.server.url, "http://localhost:8000");
        assert_eq!(config.server.api_key.as_deref(), Some("sk-obb-node"));
        assert!(config.local_llm.enabled);
        assert_eq!(config.local_llm.port, Some(11434));
    }

    #[test]
    fn a_hosted_model_and_flags_skip_the_prompts() {
        let (text, _) = run(
            &SetupArgs::default(),
            "http://gw:8000\nk\nn\nopenai/gpt-4o-mini\n",
        );
        let config: NodeConfig = toml::from_str(&text.unwrap()).unwrap();
        assert_eq!(config.llm.model.as_deref(), Some("openai/gpt-4o-mini"));
        let args = SetupArgs {
            server_url: Some("http://gw:8000".into()),
            api_key: Some("k".into()),
            local_llm_port: Some(8080),
            ..SetupArgs::default()
        };
        let (text, prompts) = run(&args, "");
        assert!(prompts.is_empty());
        assert!(text.unwrap().contains("port = 8080"));
        let (bad, _) = run(
            &SetupArgs {
                server_url: Some("gw".into()),
                ..args
            },
            "",
        );
        assert!(bad.is_err());
        let (eof, _) = run(&SetupArgs::default(), "\n");
        assert!(eof.is_err(), "a closed stdin does not loop forever");
    }
}
