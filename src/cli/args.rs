//! The command line's shape: clap definitions only. What each command does lives in the
//! sibling modules, over library calls.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success (also when stdout is closed early, as by `| head`)
  1    failure: bad input (recipe, name, hash prefix, manifest), a failed build, a damaged
       entry; the message says which input and what to do
  2    usage error (unknown flag, missing argument)
  3    `bottle verify` found a damaged or incomplete entry
  N    `bottle run` and `bottle exec`: the guest command's exit code (128+N after signal N);
       1 when a step of the run failed (the message names the step)
  130  interrupted (Ctrl-C) during a build: the engine's build is stopped, nothing is stored
  `bottle diff`, as diff(1) and `git diff --exit-code`: 0 the entries are the same, 1 they
  differ, 2 it could not compare them (an error)

Environment:
  NO_COLOR         no colour in any output (also off whenever stderr is not a terminal)
  BOTTLE_STORE     the store folder (--store)
  BOTTLE_CONFIG    the config file (--config)
  BOTTLE_LOG       a tracing filter for the log lines, e.g. bottle=debug (overrides -v/-q)";

/// How `run`, `show`, `diff` and `rm` read their TARGET (`cli::target`).
pub const TARGET_HELP: &str = "\
TARGET is read in this order:
  1. holding a `/` or ending in `.toml`: a recipe file (\"no such recipe file\" when missing);
  2. a recipe name: the newest entry built under that name (`bottle ls` lists the names);
  3. a hash, or a prefix of exactly one entry's hash.
A name wins over a hash prefix it also spells (say `cafe`): give more digits to mean the hash.";

/// `--version`: the package version and the commit it was built from (`-dirty` when the
/// working tree had changes; `unknown` outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BOTTLE_GIT_COMMIT"),
    ")"
);

/// Nix-style build-then-run pipeline for coding-agent sandboxes (bottles).
///
/// `bottle build RECIPE` hashes every input of a recipe before building, then builds what the
/// store lacks of the entry's three components — the guest image, the bundle image (this very
/// binary) and the config — and publishes the entry. `bottle run HASH` checks that entry, brings
/// it up (network, bundle, guest, chown, provisioning), runs the agent, and tears everything
/// down in reverse order whatever happens.
#[derive(Debug, Parser)]
#[command(name = "bottle", version = VERSION, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The store folder [default: $XDG_CACHE_HOME/bottle, else ~/.cache/bottle]
    #[arg(long, global = true, env = "BOTTLE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The config file: substituters, trusted-public-keys, secret-key-file, s3-endpoint,
    /// s3-region [default:
    /// $XDG_CONFIG_HOME/bottle/config.toml, else ~/.config/bottle/config.toml]
    #[arg(long, global = true, env = "BOTTLE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Plain progress lines instead of spinners, even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less output: no progress, errors only
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a recipe into the store (or find it there, or pull it from a substituter); prints
    /// the hash as the last line
    ///
    /// Only the components the store lacks are built: change an allowlist and only the
    /// config is new; upgrade bottle and only the bundle is. `--json` prints the hash, the
    /// entry's path, its name, whether anything was built, and each component with its hash
    /// and whether it was cached.
    Build {
        /// The recipe file, e.g. recipes/demo.toml
        recipe: PathBuf,
        /// Refuse inputs the hash cannot pin (unpinned FROM, ADD of a URL) instead of warning
        #[arg(long)]
        pure: bool,
        /// Also record a gc root of this name for the entry (every build already keeps the
        /// newest entry of its recipe name until a newer build of that name replaces it)
        #[arg(long, value_name = "NAME")]
        root: Option<String>,
        /// Then push the entry to this cache, signed with the secret-key-file (CI's one
        /// command)
        #[arg(long, value_name = "URL")]
        push: Option<String>,
    },
    /// Print a recipe's hash without building: CI's cache key
    Hash {
        /// The recipe file
        recipe: PathBuf,
        /// Refuse inputs the hash cannot pin instead of warning
        #[arg(long)]
        pure: bool,
    },
    /// List the store's entries: short hash, recipe name, age, size, and what keeps it
    ///
    /// ROOTED names what keeps an entry from `bottle gc`: `latest` (the newest build of its
    /// name), `root:NAME` (`build --root`), `run:ID` (a run uses it), or `-`. `--json` gives
    /// full hashes, names, `created` (Unix seconds) and `age_seconds`, sizes in bytes, roots,
    /// pins and component hashes.
    Ls,
    /// Show an entry: its components, the guest and bundle specs
    #[command(after_help = TARGET_HELP)]
    Show {
        /// A recipe name, a recipe file, or a hash or unique prefix
        target: String,
    },
    /// Remove one entry, the roots naming it, and at once the components no other entry
    /// names (with their engine images); refused while a run uses the entry
    #[command(after_help = TARGET_HELP)]
    Rm {
        /// A recipe name, a recipe file, or a hash or unique prefix
        target: String,
    },
    /// Rehash entries (all when none is given): manifest, records, files, config; exits 3
    /// naming each damaged file
    #[command(after_help = TARGET_HELP)]
    Verify {
        /// A recipe name, a recipe file, or a hash or unique prefix
        hash: Option<String>,
    },
    /// Remove entries nothing keeps, components no kept entry names, their engine images,
    /// leftovers of killed builds and old layouts
    ///
    /// Kept: the newest entry of each recipe name (every build records it, as Nix's `result`
    /// link), `build --root` roots, entries a run uses, and --keep. Also removed from the
    /// engine: the images of the removed components (labelled bottle.component, tagged or
    /// dangling) and the build cache their guest builds left. Images bottle did not make are
    /// never touched.
    Gc {
        /// Keep this entry too (a recipe name, a recipe file, a hash or prefix; with --remote,
        /// a full hash); repeatable
        #[arg(long, value_name = "TARGET")]
        keep: Vec<String>,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Collect a cache instead: remove its entries not given with --keep (none when no
        /// --keep is given: then only what no entry names), the components no kept entry
        /// names, the chunks no kept component lists; refused while a push is under way
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Which components, recipe fields and input files differ between two entries ("why did
    /// CI rebuild?")
    ///
    /// Exits 0 when they are the same, 1 when they differ, 2 on an error (as diff(1)).
    #[command(after_help = TARGET_HELP)]
    Diff {
        /// A recipe name, a recipe file, or a hash or unique prefix
        a: String,
        /// A recipe name, a recipe file, or a hash or unique prefix
        b: String,
    },
    /// Run a bottle: network, bundle, guest, chown, provision, the agent; then tear it all down
    ///
    /// A recipe file is built first (or found in the store).
    #[command(after_help = TARGET_HELP)]
    Run {
        /// A recipe name, a recipe file (built first), or a hash or unique prefix
        target: String,
        /// The pool the run's subnets are carved from (in /28s)
        #[arg(long, env = "BOTTLE_SUBNET_POOL", default_value = crate::run::subnet::DEFAULT_POOL, value_name = "CIDR")]
        subnet_pool: String,
        /// The command to run in the guest instead of the recipe's
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Check what a run needs here: engine, KVM, disk, and a TARGET's tokens, keys and
    /// known_hosts
    ///
    /// Every problem is listed at once, each with its fix; exits 1 if there is any. Without a
    /// TARGET only the machine is checked. `bottle run` makes the same checks before it builds
    /// or creates anything. `--json` prints a list of {check, ok, detail, problem, fix}.
    #[command(after_help = TARGET_HELP)]
    Doctor {
        /// A recipe name, a recipe file, or a hash or unique prefix; none: the machine only
        target: Option<String>,
    },
    /// List the runs of this store (live, and stale ones a killed run left)
    Ps,
    /// Run a command in a live run's guest, as its user, with the whole guest env
    ///
    /// `bottle exec RUN ls -la` and `bottle exec RUN -- ls -la` are the same: everything after
    /// RUN is the command.
    Exec {
        /// A run id or unique prefix (`bottle ps`)
        run: String,
        /// The command and its arguments
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Print a run's audit log: one line per request the guest made (also after the run
    /// ended, until `bottle gc`)
    Logs {
        /// A run id or unique prefix (`bottle ps`, or the id `bottle run` printed)
        run: String,
        /// Keep printing lines as they come, until the run ends
        #[arg(long, short)]
        follow: bool,
    },
    /// Answer the agent's requests in a live run: list the pending ones (id, kind, what, age),
    /// approve or deny a grant, answer a question
    ///
    /// The agent files requests with supervise in the bundle (allow a host, let DLP pass a
    /// value, a question; see its `~/.bottle/SUPERVISE.md`). An approved grant takes effect
    /// within a second, for this run only.
    Supervise {
        /// A run id or unique prefix (`bottle ps`)
        run: String,
        /// Approve the grant request ID (allow_host, allow_dlp)
        #[arg(long, value_name = "ID", groups = ["act", "decide"])]
        approve: Option<String>,
        /// Deny the request ID (any kind)
        #[arg(long, value_name = "ID", groups = ["act", "decide"])]
        deny: Option<String>,
        /// Why, for the agent (with --deny or --approve)
        #[arg(long, value_name = "TEXT", requires = "decide")]
        reason: Option<String>,
        /// Answer the question ID with TEXT
        #[arg(long, num_args = 2, value_names = ["ID", "TEXT"], group = "act")]
        answer: Option<Vec<String>>,
        /// Print the request ID whole: every byte of its value or question, escaped
        #[arg(long, value_name = "ID", conflicts_with_all = ["act", "all", "watch"])]
        show: Option<String>,
        /// List answered requests too
        #[arg(long, conflicts_with = "act")]
        all: bool,
        /// Keep printing new requests as the agent files them, until the run ends
        #[arg(long, short, conflicts_with = "act")]
        watch: bool,
    },
    /// Serve a local web page for this store's runs: live traffic, pending requests to
    /// approve, deny or answer, and git-gate's pushes
    ///
    /// Prints a URL with a token made at this start; opening it signs the browser in (a
    /// cookie). The page shows the same state as `bottle ps`, `logs` and `supervise`, and
    /// answers through the same code. Runs until Ctrl-C.
    Console {
        /// The address to listen on; another than loopback is warned about
        #[arg(long, value_name = "ADDR:PORT", default_value = crate::console::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Open the page in the desktop's browser (xdg-open)
        #[arg(long)]
        open: bool,
    },
    /// Remove what a run left behind (a live run is asked to stop first)
    Down {
        /// A run id or unique prefix (`bottle ps`)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run: Option<String>,
        /// Every run of this store, and anything else labelled with it
        #[arg(long)]
        all: bool,
    },
    /// Push an entry to a cache, signed: the components and chunks the cache lacks, then the
    /// manifest and its signature
    Push {
        /// A hash or unique prefix of a store entry
        hash: String,
        /// The cache: `file:///PATH`, `http(s)://HOST[:PORT]/PREFIX` or `s3://BUCKET/PREFIX`
        #[arg(long, value_name = "URL")]
        to: String,
        /// The secret key to sign with (`bottle key generate`) [default: BOTTLE_SECRET_KEY_FILE,
        /// else the config's secret-key-file]; unsigned without one
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Pull an entry from a cache: every byte checked, signed by a trusted key, only the
    /// chunks this machine lacks downloaded
    Pull {
        /// The entry's full hash
        hash: String,
        /// The cache: `file:///PATH`, `http(s)://HOST[:PORT]/PREFIX` or `s3://BUCKET/PREFIX`
        #[arg(long, value_name = "URL")]
        from: String,
        /// A public key whose signature is accepted (NAME:BASE64, as `bottle key generate`
        /// prints it); repeatable; beside BOTTLE_TRUSTED_PUBLIC_KEYS or the config's
        /// trusted-public-keys
        #[arg(long, value_name = "PUBKEY")]
        trust: Vec<String>,
        /// Accept an entry no trusted key signed: its manifest, records, config and every byte
        /// are still checked against its hash, but the cache chooses the guest's and the
        /// bundle's image archives
        #[arg(long)]
        no_check_sigs: bool,
    },
    /// Print a shell completion script: `bottle completions bash > ~/.local/share/bash-completion/completions/bottle`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Signing keys for pushes
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The bundle's entry point: runs the listed daemons until SIGTERM (inside the bundle)
    ///
    /// Named `sidecar` because the bundle image's entry point is `/bottle sidecar`: renaming it
    /// would change every bundle component's hash.
    #[command(hide = true)]
    Sidecar(crate::bundle::EntryArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: NAME.sec (mode 0600) and NAME.pub, one line NAME:BASE64
    /// each as Nix writes them; prints the public line, which `--trust` takes
    Generate {
        /// The key's name, written into every signature it makes (e.g. ci-1)
        name: String,
        /// The folder to write the two files into
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}
