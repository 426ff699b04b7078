#![forbid(unsafe_code)]
fn main() {
    println!("idgate {}", env!("CARGO_PKG_VERSION"));
}
