using BenchmarkDotNet.Running;

namespace Virtio.Benchmarks;

/// <summary>
/// Entry point: <c>dotnet run -c Release --project benchmarks/Virtio.Benchmarks -- --filter '*'</c>.
/// Every benchmark class is one file; BenchmarkSwitcher finds them all.
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
