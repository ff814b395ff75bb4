//! `fuzz`: runs the fuzz targets (the adapter's wire decoder and value conversions, the node's
//! API bodies, values and dialect parsers) for minutes at a time, in batches of fresh seeds.
//! Prints the cases run per target; a finding is printed with its seed and shrunk input and
//! saved under `--out`, and the exit status is then 1.
//!
//! `cargo run --release -p ioscale-node --features fuzzing --bin fuzz -- --seconds 1800`

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Parser;
use ioscale_node::fuzzing::{Target, all_targets, runner};

#[derive(Debug, Parser)]
#[command(about = "Runs the fuzz targets for a while; exits 1 on a finding")]
struct Args {
    /// Targets to run (repeat the flag); all when none is given. `--list` prints them.
    #[arg(long)]
    target: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Cases per batch; each batch draws the next seed.
    #[arg(long, default_value_t = 2_000)]
    batch: u32,
    /// First seed (default: from the clock); batch `i` uses `seed + i`, so a finding's seed
    /// replays it with `--seed <seed> --batch <batch>`.
    #[arg(long)]
    seed: Option<u64>,
    /// Where findings are written.
    #[arg(long, default_value = "target/fuzz-findings")]
    out: PathBuf,
    /// Prints the target names and exits.
    #[arg(long)]
    list: bool,
}

/// What one target's run came to.
struct Outcome {
    cases: u64,
    elapsed: Duration,
    finding: Option<(u64, String)>,
}

fn fuzz(target: &Target, args: &Args, first_seed: u64) -> Outcome {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut cases = 0u64;
    let mut seed = first_seed;
    while Instant::now() < deadline {
        if let Err(e) = (target.run)(&mut runner(args.batch, seed)) {
            return Outcome {
                cases,
                elapsed: start.elapsed(),
                finding: Some((seed, e)),
            };
        }
        cases += u64::from(args.batch);
        seed = seed.wrapping_add(1);
    }
    Outcome {
        cases,
        elapsed: start.elapsed(),
        finding: None,
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let targets = all_targets();
    if args.list {
        targets.iter().for_each(|t| println!("{}", t.name));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(unknown) = args
        .target
        .iter()
        .find(|n| !targets.iter().any(|t| &t.name == n))
    {
        anyhow::bail!("unknown target {unknown:?} (see --list)");
    }
    let clock = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let seed = args.seed.unwrap_or(clock);
    let mut findings = 0;
    for t in targets
        .iter()
        .filter(|t| args.target.is_empty() || args.target.iter().any(|n| n == t.name))
    {
        let o = fuzz(t, &args, seed);
        let secs = o.elapsed.as_secs_f64();
        match o.finding {
            None => println!("{}: {} cases in {secs:.0} s, no finding", t.name, o.cases),
            Some((seed, message)) => {
                findings += 1;
                std::fs::create_dir_all(&args.out).context("creating --out")?;
                let file = args.out.join(format!("{}-{seed}.txt", t.name));
                let replay = format!("--target {} --seed {seed} --batch {}", t.name, args.batch);
                std::fs::write(&file, format!("{replay}\n{message}\n")).context("saving")?;
                println!(
                    "{}: FINDING after {} cases in {secs:.0} s (replay: {replay}; saved to {})\n{message}",
                    t.name,
                    o.cases,
                    file.display()
                );
            }
        }
    }
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
