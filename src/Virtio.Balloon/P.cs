namespace Virtio.Balloon; internal static class Placeholder { }
